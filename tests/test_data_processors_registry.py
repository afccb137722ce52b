"""Processors are registered objects that declare what they write; the dataset, loader and pretrain's
target check read the declaration, so a new processor is one class (here: one defined in this file)."""
import json
import os
import signal
import struct

import numpy as np
import pytest

from tencentpretrain.data.dataset import Dataset, array_dtypes, header_bytes, processor_of, read_header
from tencentpretrain.data.loader import build_loader
from tencentpretrain.data.pipeline import PreprocessOptions, preprocess
from tencentpretrain.data.processors import Processor
from tencentpretrain.errors import UserError
from tencentpretrain.registry import PROCESSORS

WORDS = "the cat sat on a mat while dog ran far away from big small red blue green house tree".split()


class ToyProcessor(Processor):
    """Each line -> [CLS] its first tokens [SEP], with its word count and a 'long line' label."""
    instance_arrays = {"n_words": "int32", "is_long": "uint8"}
    labels = {"long": "is_long"}

    def process_block(self, lines, start, end):
        for pos, _, text, _ in lines:  # corpus.Piece: lines shorter than 1 MiB come whole
            ids = self.encode(text)[:self.L - 2]
            if ids:
                rng = np.random.default_rng([self.opts.seed, pos])
                yield from self.emit([self.cls] + ids + [self.sep], rng, n_words=len(text.split()),
                                     is_long=int(len(ids) > 5))


class FailingProcessor(ToyProcessor):
    """Fails in every block but the first: a bug (ValueError) or, with seed 666, a killed worker."""

    def process_block(self, lines, start, end):
        if start > 0:
            if self.opts.seed == 666:
                os.kill(os.getpid(), signal.SIGKILL)
            raise ValueError("toy failure")
        yield from super().process_block(lines, start, end)


@pytest.fixture
def toy(monkeypatch):
    PROCESSORS.names()  # load the built-in ones first
    monkeypatch.setitem(PROCESSORS._entries, "toy", ToyProcessor)
    monkeypatch.setitem(PROCESSORS._entries, "failing", FailingProcessor)


@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, rng.integers(1, 10))) for _ in range(120)]
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path / "c.txt", lines


def run(tmp_path, corpus_path, processor, name="ds.tpd", **kw):
    kw.setdefault("seq_length", 16)
    opts = PreprocessOptions(str(corpus_path), str(tmp_path / name), data_processor=processor, **kw)
    preprocess(opts, log=open(os.devnull, "w"))
    return opts.dataset_path


def test_builtin_declarations():
    assert {"bert", "lm", "mlm"} <= set(PROCESSORS.names())
    bert, mlm, lm = (PROCESSORS.get(n) for n in ("bert", "mlm", "lm"))
    assert bert.targets == {"mlm", "sp"} and mlm.targets == {"mlm"} and lm.targets == {"lm"}
    assert bert.instance_arrays == {"seg_split": "int32", "is_random_next": "uint8"}
    assert mlm.instance_arrays == lm.instance_arrays == {}
    assert bert.labels == {"sp": "is_random_next"} and lm.token_target == "lm"


@pytest.mark.parametrize("name,kw", [("mlm", {"dup_factor": 2}), ("bert", {"dynamic_masking": True}),
                                     ("lm", {})])
def test_files_and_batches_follow_the_declaration(tmp_path, corpus, name, kw):
    path = run(tmp_path, corpus[0], name, **kw)
    header = read_header(path)
    declared = PROCESSORS.get(name)
    masks = ["mlm_positions", "mlm_targets", "mlm_offsets"] if name == "mlm" else []
    assert list(header.arrays) == sorted(["tokens", "offsets", *declared.instance_arrays, *masks])
    assert list(array_dtypes(header)) == ["tokens", "offsets", *declared.instance_arrays, *masks]  # file order
    batch = next(iter(build_loader(path, 4, shuffle=False)))
    assert set(batch) == {"src", "seg"} | {f"tgt_{t}" for t in declared.targets}


def test_a_processor_defined_elsewhere_runs_end_to_end(tmp_path, corpus, toy):
    path, lines = corpus
    one = run(tmp_path, path, "toy", name="one.tpd", dup_factor=2, block_bytes=200)
    two = run(tmp_path, path, "toy", name="two.tpd", dup_factor=2, block_bytes=200, processes_num=2)
    assert open(one, "rb").read() == open(two, "rb").read()  # N processes == 1 process
    ds = Dataset(one)
    assert ds.header.processor == "toy" and not ds.header.dynamic_masking and ds.header.dup_factor == 2
    assert list(ds.header.arrays) == sorted(["tokens", "offsets", "n_words", "is_long", "mlm_positions",
                                             "mlm_targets", "mlm_offsets"])
    assert len(ds) == 2 * len(lines)
    assert [ds[2 * i]["n_words"] for i in range(len(lines))] == [len(line.split()) for line in lines]
    assert ds[0]["n_words"] == ds[1]["n_words"] and "mlm_positions" in ds[0]
    batch = next(iter(build_loader(one, 6, shuffle=False)))
    assert set(batch) == {"src", "seg", "tgt_mlm", "tgt_long"}
    lengths = (batch["seg"] == 1).sum(1)
    assert batch["tgt_long"].tolist() == [int(n > 7) for n in lengths.tolist()]  # [CLS] + more than 5 + [SEP]
    assert processor_of(ds.header).targets == {"mlm", "long"}


def test_worker_failures_are_reported(tmp_path, corpus, toy):
    with pytest.raises(RuntimeError, match=r"(?s)preprocessing worker \d failed:.*process_block.*toy failure"):
        run(tmp_path, corpus[0], "failing", block_bytes=200, processes_num=2)
    with pytest.raises(UserError, match=r"preprocessing worker \d died \(exit code -9; .*--processes_num"):
        run(tmp_path, corpus[0], "failing", block_bytes=200, processes_num=2, seed=666)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]  # no dataset, no temp files


def test_dataset_of_unknown_processor(tmp_path, corpus):
    raw = bytearray(open(run(tmp_path, corpus[0], "mlm", dynamic_masking=True), "rb").read())
    n = struct.unpack("<Q", raw[8:16])[0]
    header = json.loads(raw[16:16 + n])
    header["processor"] = "zzz"  # same width: the header keeps its length; re-signed with its checksum
    signed = header_bytes(json.dumps(header, sort_keys=True).encode())
    (tmp_path / "x.tpd").write_bytes(signed + raw[len(signed):])
    assert read_header(str(tmp_path / "x.tpd")).processor == "zzz"
    with pytest.raises(UserError, match=r"x.tpd was made by a data processor 'zzz' .*\(it has .*bert.*\); re-run"):
        build_loader(str(tmp_path / "x.tpd"), 2)
