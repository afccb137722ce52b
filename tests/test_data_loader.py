"""Loader: epoch coverage, rank sharding == global batch, exact resume, dynamic masks, header checks."""
import json
import struct

import numpy as np
import pytest
import torch

from tencentpretrain.data.dataset import MAGIC, Dataset, check_compatible, read_header
from tencentpretrain.data.loader import build_loader
from tencentpretrain.data.pipeline import PreprocessOptions, preprocess
from tencentpretrain.errors import UserError

WORDS = "the cat sat on a mat while dog ran far away from big small red blue green house tree".split()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    d = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(0)
    docs = ["\n".join(" ".join(rng.choice(WORDS, rng.integers(2, 9))) for _ in range(rng.integers(1, 6)))
            for _ in range(40)]
    (d / "c.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    out = {}
    for name, proc, kw in [("mlm", "mlm", {"dynamic_masking": True}), ("bert", "bert", {"dynamic_masking": True}),
                           ("static", "mlm", {"dup_factor": 2}), ("lm", "lm", {})]:
        path = str(d / f"{name}.tpd")
        preprocess(PreprocessOptions(str(d / "c.txt"), path, data_processor=proc, seq_length=24, **kw),
                   log=open("/dev/null", "w"))
        out[name] = path
    return out


def take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_epoch_covers_every_instance_once_then_reshuffles(datasets):
    loader = build_loader(datasets["mlm"], 1, seed=5, pad_to_seq_length=True)
    n = loader.instances_num
    ds = Dataset(datasets["mlm"])
    seen = [loader.stream_indices([p])[0][1] for p in range(2 * n)]
    assert sorted(seen[:n]) == list(range(n)) == sorted(seen[n:]) and seen[:n] != seen[n:]
    batches = take(loader, 3)
    first = loader.stream_indices([0])[0][1]
    assert (batches[0]["src"][0] != 0).sum() == len(ds[first]["tokens"])


@pytest.mark.parametrize("name", ["mlm", "bert", "static", "lm"])
def test_ranks_together_equal_the_global_batch(datasets, name):
    B, W, steps = 3, 4, 9  # 9 steps of 12 cross several epoch ends
    glob = take(build_loader(datasets[name], B * W, seed=11, pad_to_seq_length=True), steps)
    ranks = [take(build_loader(datasets[name], B, rank=r, world_size=W, seed=11, pad_to_seq_length=True), steps)
             for r in range(W)]
    for s in range(steps):
        for key in glob[s]:
            assert torch.equal(torch.cat([ranks[r][s][key] for r in range(W)]), glob[s][key]), (s, key)


@pytest.mark.parametrize("name", ["bert", "lm"])
def test_resume_is_exact(datasets, name):
    full = take(build_loader(datasets[name], 5, rank=1, world_size=2, seed=3), 20)
    first = build_loader(datasets[name], 5, rank=1, world_size=2, seed=3)
    it = iter(first)
    for _ in range(13):
        next(it)
    state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint as plain data
    assert set(state) >= {"epoch", "position"}
    resumed = build_loader(datasets[name], 5, rank=1, world_size=2, seed=3)
    resumed.load_state_dict(state)
    for a, b in zip(full[13:], take(resumed, 7)):
        assert all(torch.equal(a[k], b[k]) for k in a)
    wrong_seed = build_loader(datasets[name], 5, seed=4)
    with pytest.raises(UserError, match="seed"):
        wrong_seed.load_state_dict(state)


def test_dynamic_masks_change_per_epoch_and_rate(datasets):
    loader = build_loader(datasets["mlm"], 1, shuffle=False)
    n = loader.instances_num
    e0, e1 = take(loader, n), take(loader, n)
    assert any(not torch.equal(a["tgt_mlm"], b["tgt_mlm"]) for a, b in zip(e0, e1))
    assert all(torch.equal(torch.where(a["tgt_mlm"] >= 0, a["tgt_mlm"], a["src"]),
                           torch.where(b["tgt_mlm"] >= 0, b["tgt_mlm"], b["src"])) for a, b in zip(e0, e1))
    maskable = sum(int(((b["src"] != 101) & (b["src"] != 102) & (b["seg"] > 0)).sum()) for b in e0)
    masked = sum(int((b["tgt_mlm"] >= 0).sum()) for b in e0)
    assert 0.12 < masked / maskable < 0.25  # at least one per short instance pushes it above 15%
    for b in e0:  # never [CLS], [SEP] or padding
        assert not ((b["tgt_mlm"] >= 0) & ((b["seg"] == 0) | (b["tgt_mlm"] == 101) | (b["tgt_mlm"] == 102))).any()


def test_header_is_exposed_and_checked(datasets):
    h = read_header(datasets["bert"])
    assert (h.processor, h.seq_length, h.vocab_size, h.dynamic_masking) == ("bert", 24, 30522, True)
    assert h.special_ids == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
    assert h.token_dtype == "uint16" and len(h.vocab_sha256) == 64 and h.instances_num > 0
    check_compatible(h, vocab_size=30522, seq_length=512, processor="bert")
    with pytest.raises(UserError, match="vocab_size 21128"):
        build_loader(datasets["bert"], 2, vocab_size=21128)
    with pytest.raises(UserError, match="max_seq_length is 16"):
        check_compatible(h, seq_length=16)
    with pytest.raises(UserError, match="'mlm'"):
        check_compatible(h, processor="mlm")


def test_bad_dataset_files(datasets, tmp_path):
    raw = open(datasets["mlm"], "rb").read()
    cases = {
        "truncated": raw[:-100],
        "pickle": b"\x80\x04\x95" + raw[3:],
        "version": None,
        "empty": b"",
    }
    n = struct.unpack("<Q", raw[8:16])[0]
    header = json.loads(raw[16:16 + n])
    header["version"] = 9  # same width as 1: the header keeps its length
    blob = json.dumps(header).encode().ljust(n)
    cases["version"] = MAGIC + struct.pack("<Q", n) + blob + raw[16 + n:]
    messages = {"truncated": "truncated", "pickle": "not a dataset", "version": "version 9 ", "empty": "not a dataset"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError, match=messages[name]):
            build_loader(str(tmp_path / name), 2)
    with pytest.raises(UserError, match="dataset not found"):
        build_loader(str(tmp_path / "missing.tpd"), 2)
    with pytest.raises(UserError, match="rank"):
        build_loader(datasets["mlm"], 2, rank=2, world_size=2)
