"""Reliability of the data path: long lines in bounded memory and linear time, dataset checksums,
token ids checked against the model's vocabulary."""
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from tencentpretrain.data import dataset as dataset_mod
from tencentpretrain.data.corpus import Corpus
from tencentpretrain.data.dataset import ALIGN, Dataset, DatasetHeader, ShardWriter, assemble, read_header, verify
from tencentpretrain.data.loader import build_loader
from tencentpretrain.data.pipeline import PreprocessOptions, preprocess
from tencentpretrain.data.tokenizers import build_tokenizer
from tencentpretrain.errors import UserError
from tencentpretrain.training.pretrain import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("the cat sat on a mat while dog ran far away from big small red blue green house tree river ship "
         "whale sea captain boat storm night day").split()
ODD = ["Café", "naïve", "日本語", "don't", "(x+y)", "e-mail", "ÅNGSTRÖM", "tab\there", "a  b", "x" * 40]


def words_line(n, seed=0, odd=False):
    rng = np.random.default_rng(seed)
    pool = WORDS + (ODD if odd else [])
    return " ".join(rng.choice(pool, n))


def run(tmp_path, corpus, name, **kw):
    kw.setdefault("dup_factor", 1)
    opts = PreprocessOptions(corpus_path=str(corpus), dataset_path=str(tmp_path / name), **kw)
    preprocess(opts, log=open(os.devnull, "w"))
    return opts.dataset_path


# ------------------------------------------------------------------------------------------ long lines


@pytest.mark.parametrize("tokenizer", ["bert", "char", "space"])
def test_pieces_of_a_long_line_tokenize_like_the_whole_line(tmp_path, tokenizer):
    line = words_line(40000, odd=True)  # ~250 KB of words, accents, CJK, punctuation, tabs, double spaces
    giant = "ab " + "ü" * 3000 + " end"  # a word longer than a piece: cut at a character boundary
    (tmp_path / "c.txt").write_text(f"short line\n{line}\r\n{giant}\nlast\n", encoding="utf-8")
    pieces = list(Corpus(str(tmp_path / "c.txt"), piece_bytes=4096).lines(0))
    assert all(p.end - p.start <= 4096 for p in pieces)
    assert [a.end for a in pieces[:-1]] == [b.start for b in pieces[1:]]  # nothing lost or doubled
    lines, current = [], []
    for p in pieces:
        current.append(p)
        if p.line_end:
            lines.append(current)
            current = []
    assert ["".join(p.text for p in ps) for ps in lines] == ["short line", line, giant, "last"]  # "\r\n" dropped
    assert len(lines[1]) > 50 and len(lines[2]) == 3
    tok = build_tokenizer(tokenizer)
    whole = tok.convert_tokens_to_ids(tok.tokenize(line))
    assert [i for p in lines[1] for i in tok.convert_tokens_to_ids(tok.tokenize(p.text))] == whole
    assert len(whole) > 40000


@pytest.mark.parametrize("processor,kw", [
    ("mlm", {"dup_factor": 2}),
    ("mlm", {"dynamic_masking": True, "seq_length": 16}),
    ("mlm", {"full_sentences": True, "dup_factor": 2}),
    ("lm", {}),
])
def test_output_does_not_depend_on_the_piece_size(tmp_path, processor, kw):
    lines = [words_line(int(n), seed=i, odd=True) for i, n in enumerate([3, 4000, 5, 0, 9000, 7, 2])]
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    whole = run(tmp_path, tmp_path / "c.txt", "whole.tpd", data_processor=processor, **kw)
    pieces = run(tmp_path, tmp_path / "c.txt", "pieces.tpd", data_processor=processor, piece_bytes=700, **kw)
    three = run(tmp_path, tmp_path / "c.txt", "three.tpd", data_processor=processor, piece_bytes=700,
                block_bytes=20000, processes_num=3, **kw)
    one = run(tmp_path, tmp_path / "c.txt", "one.tpd", data_processor=processor, piece_bytes=700,
              block_bytes=20000, **kw)
    assert open(whole, "rb").read() == open(pieces, "rb").read()
    assert open(one, "rb").read() == open(three, "rb").read()
    assert Dataset(whole).header.tokens_num > 13000 and read_header(whole).corpus["lines"] == 7


def test_bert_reads_a_long_line_as_sentences_of_one_piece(tmp_path):
    docs = [words_line(6000, seed=1), "the cat sat .\nthe dog ran far .", words_line(30, seed=2)]
    (tmp_path / "c.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    a = run(tmp_path, tmp_path / "c.txt", "a.tpd", data_processor="bert", piece_bytes=1000, dynamic_masking=True,
            dup_factor=2, block_bytes=3000)
    b = run(tmp_path, tmp_path / "c.txt", "b.tpd", data_processor="bert", piece_bytes=1000, dynamic_masking=True,
            dup_factor=2, block_bytes=3000, processes_num=2)
    ds = Dataset(a)
    assert len(ds) > 40 and read_header(a).corpus["lines"] == 6  # the long line counts once
    assert max(len(ds[i]["tokens"]) for i in range(len(ds))) == 128
    assert open(a, "rb").read() == open(b, "rb").read()


_PROBE = r"""
import json, os, resource, sys, time
from tencentpretrain.data.pipeline import PreprocessOptions, preprocess
tmp, sizes, configs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
rng_words = "the cat sat on a mat while dog ran far away from big small red blue green house tree".split()
unit = " ".join(rng_words[(i * 7) % len(rng_words)] + ("s" if i % 3 else "") for i in range(5000)) + " "
def peak():  # this process's peak RSS: VmHWM (ru_maxrss would include the parent's, kept across exec)
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = {"start": peak(), "runs": []}
for size in sizes:  # one corpus line of `size` bytes, then a blank line and a short document
    path = os.path.join(tmp, f"c{size}.txt")
    with open(path, "w") as f:
        for _ in range(size // len(unit)):
            f.write(unit)
        f.write("end\n\nthe cat sat .\nthe dog ran .\n")
    for name, kw in configs:
        t0 = time.perf_counter()
        preprocess(PreprocessOptions(path, os.path.join(tmp, "d.tpd"), **kw), log=open(os.devnull, "w"))
        out["runs"].append({"size": size, "config": name, "secs": time.perf_counter() - t0, "peak": peak()})
    os.remove(path)
print(json.dumps(out))
"""
CONFIGS = [("mlm", {"data_processor": "mlm", "dup_factor": 1}),
           ("mlm_full", {"data_processor": "mlm", "full_sentences": True, "dynamic_masking": True}),
           ("lm", {"data_processor": "lm"}),
           ("bert", {"data_processor": "bert", "dynamic_masking": True, "dup_factor": 1})]


def probe(tmp_path, size):
    """Preprocess a single-line corpus of `size` bytes with every processor, in a fresh process: its
    peak RSS before and after each run, and the seconds each run took."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path), json.dumps([size]), json.dumps(CONFIGS)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def check_bounded_and_linear(tmp_path, size, growth_mb, total_mb, slack_s):
    """Twice the corpus: about the same peak memory, and about twice the time (not four times; `slack_s`
    absorbs the noise of short runs on a busy machine)."""
    small, large = probe(tmp_path, size), probe(tmp_path, 2 * size)
    mb = 1 << 20
    peaks = [out["runs"][-1]["peak"] / mb for out in (small, large)]
    assert peaks[1] - peaks[0] < growth_mb, (small, large)
    assert peaks[1] - large["start"] / mb < total_mb and peaks[1] < 400, (small, large)
    for s, big in zip(small["runs"], large["runs"]):
        assert big["secs"] < 3 * s["secs"] + slack_s, (s, big)


def test_single_line_corpus_memory_is_bounded_and_time_linear(tmp_path):
    # The old reader held ~20 bytes per corpus byte (+40 MB from 2 to 4 MB) and cut token buffers with
    # `del buf[:n]` (time quadratic in the line's length).
    check_bounded_and_linear(tmp_path, 2 << 20, growth_mb=15, total_mb=120, slack_s=0.5)


@pytest.mark.slow
def test_50mb_single_line_corpus(tmp_path):
    check_bounded_and_linear(tmp_path, 25 << 20, growth_mb=20, total_mb=150, slack_s=1)  # old: ~1 GB, 351 s (lm)


# --------------------------------------------------------------------------------- dataset checksums


@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    docs = ["\n".join(" ".join(rng.choice(WORDS, rng.integers(3, 12))) for _ in range(rng.integers(2, 6)))
            for _ in range(40)]
    (tmp_path / "c.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return tmp_path / "c.txt"


def split(raw):
    n = struct.unpack("<Q", raw[8:16])[0]
    return json.loads(raw[16:16 + n]), n


def test_a_changed_digit_in_the_header_is_refused(tmp_path, corpus):
    path = run(tmp_path, corpus, "d.tpd", data_processor="bert", dup_factor=2)
    raw = open(path, "rb").read()
    header, n = split(raw)
    offset = header["arrays"]["is_random_next"]["offset"]
    text = raw[16:16 + n].decode()
    at = text.index(f'"offset": {offset}') + len('"offset": ')
    digit = str((int(text[at]) + 1) % 10)
    damaged = raw[:16 + at] + digit.encode() + raw[16 + at + 1:]  # the same length: only the digit differs
    (tmp_path / "bad.tpd").write_bytes(damaged)
    for opener in (read_header, Dataset, lambda p: build_loader(p, 2)):
        with pytest.raises(UserError, match=r"bad.tpd: the dataset header \(bytes 0-\d+\) does not match its "
                                            r"checksum: .*array offsets cannot be trusted; re-run preprocess.py"):
            opener(str(tmp_path / "bad.tpd"))
    version = raw[:7] + b"\x01" + raw[8:]  # claims the format without checksums
    (tmp_path / "v.tpd").write_bytes(version)
    with pytest.raises(UserError, match="does not match its checksum"):
        read_header(str(tmp_path / "v.tpd"))
    assert read_header(path).arrays["is_random_next"]["offset"] == offset  # the intact file still opens


def test_a_changed_byte_in_an_array_is_refused(tmp_path, corpus, monkeypatch):
    monkeypatch.setattr(dataset_mod, "CHECKSUM_BLOCK", 256)  # checked at open: the first and last 256 bytes
    path = run(tmp_path, corpus, "d.tpd", data_processor="mlm", dup_factor=2)
    raw = bytearray(open(path, "rb").read())
    spec = read_header(path).arrays["tokens"]
    assert read_header(path).checksum_block == 256 and spec["length"] * 2 > 4 * 256
    assert verify(path, full=True) is True
    middle, head = spec["offset"] + spec["length"], spec["offset"] + 10
    for where, name in ((middle, "middle.tpd"), (head, "head.tpd")):
        damaged = bytearray(raw)
        damaged[where] ^= 0x01
        (tmp_path / name).write_bytes(damaged)
    Dataset(str(tmp_path / "middle.tpd"))  # the cheap check at open does not read the middle
    end = spec["offset"] + spec["length"] * 2
    with pytest.raises(UserError, match=rf"middle.tpd: array 'tokens' \(bytes {spec['offset']}-{end} of the "
                                        r"file\) does not match its checksum: .*damaged"):
        verify(str(tmp_path / "middle.tpd"), full=True)
    with pytest.raises(UserError, match=r"head.tpd: array 'tokens' .* does not match its checksum"):
        Dataset(str(tmp_path / "head.tpd"))


def as_version_1(src, dst):
    """Rewrite a dataset as preprocess.py wrote it before checksums (format version 1)."""
    raw = open(src, "rb").read()
    header, _ = split(raw)
    order = sorted(header["arrays"], key=lambda k: header["arrays"][k]["offset"])
    data = {k: raw[s["offset"]:s["offset"] + s["length"] * np.dtype(s["dtype"]).itemsize]
            for k, s in header["arrays"].items()}
    header.update(version=1, magic=b"TPDSET\x00\x01".hex())
    del header["max_token_id"], header["checksum_block"]
    for spec in header["arrays"].values():
        del spec["sha256"], spec["sha256_head"], spec["sha256_tail"]
    base = 0
    while True:
        pos = base
        for name in order:
            header["arrays"][name]["offset"] = pos
            pos = (pos + len(data[name]) + ALIGN - 1) // ALIGN * ALIGN
        header["file_bytes"] = pos
        blob = json.dumps(header, sort_keys=True).encode()
        if (16 + len(blob) + ALIGN - 1) // ALIGN * ALIGN <= base:
            break
        base = (16 + len(blob) + ALIGN - 1) // ALIGN * ALIGN
    out = bytearray(header["file_bytes"])
    out[:16 + len(blob)] = b"TPDSET\x00\x01" + struct.pack("<Q", len(blob)) + blob
    for name in order:
        offset = header["arrays"][name]["offset"]
        out[offset:offset + len(data[name])] = data[name]
    open(dst, "wb").write(bytes(out))
    return blob


def test_version_1_files_are_read_without_checksums(tmp_path, corpus):
    path = run(tmp_path, corpus, "d.tpd", data_processor="bert", dup_factor=2)
    blob = as_version_1(path, str(tmp_path / "v1.tpd"))
    old, new = Dataset(str(tmp_path / "v1.tpd")), Dataset(path)
    assert old.header.version == 1 and old.header.max_token_id is None and new.header.version == 2
    assert verify(old.path, full=True) is False and verify(new.path, full=True) is True
    assert all(np.array_equal(old[i]["tokens"], new[i]["tokens"]) for i in range(len(new)))
    assert old.max_token_id() == new.max_token_id() == new.header.max_token_id == int(new.tokens.max())
    text = blob.decode()  # without a checksum, a changed offset digit is caught by the layout check
    at = text.index('"offset": ', text.index('"seg_split"')) + len('"offset": ')
    raw = bytearray(open(tmp_path / "v1.tpd", "rb").read())
    raw[16 + at] = ord(str((int(text[at]) + 1) % 10))
    (tmp_path / "bad.tpd").write_bytes(raw)
    with pytest.raises(UserError, match=r"bad.tpd: damaged dataset header: array '\w+' at byte \d+, .*; "
                                        "re-run preprocess.py"):
        Dataset(str(tmp_path / "bad.tpd"))


# --------------------------------------------------------------------------- token ids and vocabulary

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
TINY = ["--config_path", os.path.join(ROOT, "models", "bert", "tiny_config.json"), "--hidden_size", "32",
        "--emb_size", "32", "--feedforward_size", "64", "--heads_num", "2", "--layers_num", "1",
        "--max_seq_length", "32", "--target", "mlm", "--data_processor", "mlm"]


def write_ids_dataset(path, vocab_size, ids):
    """A dynamic-masking mlm dataset of one instance per row of `ids`, whose header says `vocab_size`:
    what a dataset made with a bigger vocabulary than its header says looks like."""
    header = DatasetHeader(processor="mlm", seq_length=32, vocab_size=vocab_size, dynamic_masking=True,
                           special_ids={"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4})
    writer = ShardWriter(f"{path}.shard", header)
    for row in ids:
        writer.add(tokens=[2, *row, 3])
    writer.close()
    assemble(path, header, [f"{path}.shard"])
    return path


def pretrain_args(tmp_path, dataset, *extra):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return ["--dataset_path", dataset, "--vocab_path", str(tmp_path / "vocab.txt"),
            "--output_model_path", str(tmp_path / "m.bin"), "--total_steps", "1", *TINY, *extra]


def test_token_ids_beyond_the_model_vocabulary_are_refused_at_start(tmp_path):
    good = write_ids_dataset(str(tmp_path / "good.tpd"), len(VOCAB), [[5, 6, 7], [len(VOCAB) - 1, 8]])
    bad = write_ids_dataset(str(tmp_path / "bad.tpd"), len(VOCAB), [[5, 6, 7], [9, 400, 8]])
    assert read_header(bad).max_token_id == 400 and read_header(good).max_token_id == len(VOCAB) - 1
    job, _ = prepare(pretrain_args(tmp_path, good))
    assert job.model_cfg.vocab_size == len(VOCAB)
    message = (rf"bad.tpd holds token id 400, but the model's vocabulary has {len(VOCAB)} ids "
               rf"\(0-{len(VOCAB) - 1}\): .*re-run preprocess.py with the model's vocabulary")
    with pytest.raises(UserError, match=message):
        prepare(pretrain_args(tmp_path, bad))
    as_version_1(bad, str(tmp_path / "bad1.tpd"))  # no max_token_id in the header: computed from the arrays
    with pytest.raises(UserError, match=message.replace("bad.tpd", "bad1.tpd")):
        prepare(pretrain_args(tmp_path, str(tmp_path / "bad1.tpd")))


def test_pretrain_verify_dataset_flag(tmp_path, corpus, monkeypatch, capsys):
    monkeypatch.setattr(dataset_mod, "CHECKSUM_BLOCK", 64)
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    path = run(tmp_path, corpus, "d.tpd", data_processor="mlm", vocab_path=str(tmp_path / "vocab.txt"),
               seq_length=32, dynamic_masking=True)
    prepare(pretrain_args(tmp_path, path, "--verify_dataset"))
    assert "--verify_dataset: every array of" in capsys.readouterr().out
    as_version_1(path, str(tmp_path / "v1.tpd"))
    raw = bytearray(open(path, "rb").read())
    spec = read_header(path).arrays["tokens"]
    raw[spec["offset"] + spec["length"]] ^= 0x02  # the middle of the tokens: only the full check reads it
    open(path, "wb").write(raw)
    prepare(pretrain_args(tmp_path, path))
    with pytest.raises(UserError, match=r"d.tpd: array 'tokens' .* does not match its checksum"):
        prepare(pretrain_args(tmp_path, path, "--verify_dataset"))
    prepare(pretrain_args(tmp_path, str(tmp_path / "v1.tpd"), "--verify_dataset"))
    assert "v1.tpd is a format version 1 dataset: it has no checksums" in capsys.readouterr().out
