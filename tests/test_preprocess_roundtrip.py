"""preprocess -> dataset file -> loader round trips for each processor; N processes == 1 process."""
import numpy as np
import pytest

from tencentpretrain.data.dataset import Dataset
from tencentpretrain.data.loader import build_loader
from tencentpretrain.data.pipeline import PreprocessOptions, preprocess
from tencentpretrain.data.tokenizers import build_tokenizer

WORDS = ("the cat sat on a mat while dog ran far away from big small red blue green house tree river "
         "ship whale sea captain boat storm night day").split()
TOK = build_tokenizer()
CLS, SEP, PAD, MASK = TOK.cls_id, TOK.sep_id, TOK.pad_id, TOK.mask_id


def write_corpus(path, docs=30, seed=0, sentences=(1, 8), words=(3, 12)):
    """`docs` documents separated by blank lines, one sentence per line; returns the documents."""
    rng = np.random.default_rng(seed)
    out = [[" ".join(rng.choice(WORDS, rng.integers(*words))) + " ." for _ in range(rng.integers(*sentences))]
           for _ in range(docs)]
    path.write_text("\n\n".join("\n".join(d) for d in out) + "\n", encoding="utf-8")
    return out


def ids(text):
    return TOK.convert_tokens_to_ids(TOK.tokenize(text))


def run(tmp_path, corpus, processor, name="ds.tpd", **kw):
    kw.setdefault("dup_factor", 1)
    opts = PreprocessOptions(corpus_path=str(corpus), dataset_path=str(tmp_path / name), data_processor=processor, **kw)
    preprocess(opts, log=open("/dev/null", "w"))
    return Dataset(opts.dataset_path)


def test_mlm_lines(tmp_path):
    docs = write_corpus(tmp_path / "c.txt", words=(3, 30))
    ds = run(tmp_path, tmp_path / "c.txt", "mlm", seq_length=16, dynamic_masking=True)
    assert ds.header.processor == "mlm" and ds.header.seq_length == 16 and ds.header.vocab_size == 30522
    inner = []
    for i in range(len(ds)):
        t = ds[i]["tokens"].tolist()
        assert t[0] == CLS and t[-1] == SEP and 3 <= len(t) <= 16
        inner += t[1:-1]
    assert inner == [i for d in docs for s in d for i in ids(s)]  # every line, in order, split not lost
    batch = next(iter(build_loader(ds.path, 4, shuffle=False)))
    assert batch["src"].shape == batch["seg"].shape == batch["tgt_mlm"].shape
    assert batch["src"][0, 0] == CLS and set(batch["seg"].unique().tolist()) <= {0, 1}
    assert ((batch["src"] == PAD) == (batch["seg"] == 0)).all()


def test_mlm_full_sentences_packs_across_lines(tmp_path):
    docs = write_corpus(tmp_path / "c.txt")
    ds = run(tmp_path, tmp_path / "c.txt", "mlm", seq_length=32, dynamic_masking=True, full_sentences=True)
    lengths = [len(ds[i]["tokens"]) for i in range(len(ds))]
    assert all(n == 32 for n in lengths[:-1]) and lengths[-1] <= 32
    stream = [t for i in range(len(ds)) for t in ds[i]["tokens"].tolist()[1:]]
    assert all(ds[i]["tokens"][0] == CLS for i in range(len(ds)))
    assert stream == [i for d in docs for s in d for i in ids(s) + [SEP]]


def test_lm_windows_and_targets(tmp_path):
    docs = write_corpus(tmp_path / "c.txt")
    ds = run(tmp_path, tmp_path / "c.txt", "lm", seq_length=20)
    assert ds.header.dynamic_masking and ds.header.dup_factor == 1
    stream = [t for i in range(len(ds)) for t in ds[i]["tokens"].tolist()]
    assert stream == [i for d in docs for s in d for i in ids(s) + [SEP]]
    assert all(len(ds[i]["tokens"]) == 21 for i in range(len(ds) - 1))
    batch = next(iter(build_loader(ds.path, 3, shuffle=False)))
    assert set(batch) == {"src", "seg", "tgt_lm"} and batch["src"].shape == (3, 20)
    assert (batch["src"][:, 1:] == batch["tgt_lm"][:, :-1]).all()
    assert batch["src"][0].tolist() == stream[:20] and batch["tgt_lm"][0].tolist() == stream[1:21]


@pytest.mark.parametrize("block_bytes", [1 << 17, 1])  # 1: one document per block, negatives from the file
def test_bert_pairs(tmp_path, block_bytes):
    docs = write_corpus(tmp_path / "c.txt", docs=60, words=(2, 6))
    ds = run(tmp_path, tmp_path / "c.txt", "bert", seq_length=40, dynamic_masking=True, dup_factor=2,
             block_bytes=block_bytes)
    doc_streams = [[i for s in d for i in ids(s)] for d in docs]
    labels = []
    for i in range(len(ds)):
        it = ds[i]
        t, k = it["tokens"].tolist(), it["seg_split"]
        assert len(t) <= 40 and t[0] == CLS and t[k - 1] == SEP and t[-1] == SEP
        assert SEP not in t[1:k - 1] and SEP not in t[k:-1] and k >= 3 and len(t) - k >= 2
        a, b = t[1:k - 1], t[k:-1]
        labels.append(it["is_random_next"])
        if it["is_random_next"] == 0:  # A then B: one contiguous stretch of one document (no truncation here)
            assert any(_contains(d, a + b) for d in doc_streams)
        else:  # B comes from another document
            assert not any(_contains(d, a) and _contains(d, b) for d in doc_streams if len(a) > 8)
            assert any(_contains(d, b) for d in doc_streams)
    assert 0.3 < np.mean(labels) < 0.75
    batch = next(iter(build_loader(ds.path, 8, shuffle=False)))
    assert batch["tgt_sp"].shape == (8,)
    seg0 = batch["seg"][0].tolist()
    k = ds[0]["seg_split"]
    assert seg0[:k] == [1] * k and set(seg0[k:len(ds[0]["tokens"])]) == {2}


def _contains(seq, sub):
    n = len(sub)
    return any(seq[i:i + n] == sub for i in range(len(seq) - n + 1))


def test_bert_truncates_long_pairs(tmp_path):
    write_corpus(tmp_path / "c.txt", words=(20, 60))
    ds = run(tmp_path, tmp_path / "c.txt", "bert", seq_length=24, dynamic_masking=True)
    assert max(len(ds[i]["tokens"]) for i in range(len(ds))) == 24


def test_static_masking_copies(tmp_path):
    write_corpus(tmp_path / "c.txt")
    ds = run(tmp_path, tmp_path / "c.txt", "mlm", seq_length=64, dup_factor=3)
    assert not ds.header.dynamic_masking and ds.header.dup_factor == 3 and len(ds) % 3 == 0
    shown_as_mask = selected = 0
    for i in range(0, len(ds), 3):
        copies = [ds[i + c] for c in range(3)]
        originals = []
        for it in copies:
            t = it["tokens"].copy()
            shown_as_mask += int((t[it["mlm_positions"]] == MASK).sum())
            selected += len(it["mlm_positions"])
            t[it["mlm_positions"]] = it["mlm_targets"]
            originals.append(t.tolist())
        assert originals[0] == originals[1] == originals[2]
    assert 0.7 < shown_as_mask / selected < 0.9
    assert any(not np.array_equal(ds[i]["mlm_positions"], ds[i + 1]["mlm_positions"]) for i in range(0, len(ds), 3))
    batch = next(iter(build_loader(ds.path, 4, shuffle=False)))
    it = ds[0]
    assert batch["tgt_mlm"][0, it["mlm_positions"]].tolist() == it["mlm_targets"].tolist()
    assert (batch["tgt_mlm"][0] != -100).sum() == len(it["mlm_positions"])


@pytest.mark.parametrize("processor,kw", [
    ("mlm", {"dup_factor": 2}),
    ("mlm", {"full_sentences": True, "dynamic_masking": True}),
    ("bert", {"dup_factor": 2}),
    ("lm", {}),
])
def test_processes_give_identical_dataset(tmp_path, processor, kw):
    write_corpus(tmp_path / "c.txt", docs=80)
    one = run(tmp_path, tmp_path / "c.txt", processor, name="one.tpd", seq_length=24, block_bytes=300,
              processes_num=1, **kw)
    three = run(tmp_path, tmp_path / "c.txt", processor, name="three.tpd", seq_length=24, block_bytes=300,
                processes_num=3, **kw)
    assert len(one) > 50
    with open(one.path, "rb") as f1, open(three.path, "rb") as f3:
        assert f1.read() == f3.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "one.tpd", "three.tpd"]  # no temp left


def test_whole_word_masking_dynamic(tmp_path):
    (tmp_path / "c.txt").write_text("unbelievable transformations happened\n" * 50, encoding="utf-8")
    ds = run(tmp_path, tmp_path / "c.txt", "mlm", seq_length=16, dynamic_masking=True, whole_word_masking=True)
    assert "is_continuation" in ds.arrays
    cont = np.asarray(ds.arrays["is_continuation"], dtype=bool)
    for batch, _ in zip(build_loader(ds.path, 10, seed=3), range(5)):
        for src, tgt in zip(batch["src"].numpy(), batch["tgt_mlm"].numpy()):
            orig = np.where(tgt != -100, tgt, src)
            chosen = tgt != -100
            for i in range(1, len(orig)):
                if cont[orig[i]]:
                    assert chosen[i] == chosen[i - 1]
