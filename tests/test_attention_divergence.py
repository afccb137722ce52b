"""Attention divergence between students and their teacher (issue 9, item 4): the JS arithmetic, zero for the
teacher itself, padding-blind, the head-averaged path, the CLI's three files and its errors."""
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import importlib.util

import numpy as np
import pytest
import torch

from tencentpretrain.analysis.attention import (MAX_JS, attention_divergence, dataset_batches, js_divergence,
                                                text_batches)
from tencentpretrain.analysis.attention_cli import main, run_attention_divergence
from tencentpretrain.config import load_model_config
from tencentpretrain.data.loader import DataLoader
from tencentpretrain.data.pipeline import PreprocessOptions, preprocess
from tencentpretrain.data.tokenizers import build_tokenizer
from tencentpretrain.errors import UserError, run_cli
from tencentpretrain.evaluation import load_model
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import save_state_dict

HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEACHER_CONFIG = ROOT / "models" / "kd" / "tiny_teacher_config.json"  # 2 layers, hidden 128, 2 heads
WORDS = "the cat sat on a mat while dog ran far away from big small red blue green house tree".split()
VOCAB = 5 + len(WORDS)
MASK_ID = 4


def _config(path, **changes):
    with open(TEACHER_CONFIG, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg.update(changes)
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("attention")
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, rng.integers(3, 14))) for _ in range(24)]
    (d / "corpus.txt").write_text("\n\n".join("\n".join(lines[i:i + 3]) for i in range(0, 24, 3)) + "\n")
    preprocess(PreprocessOptions(str(d / "corpus.txt"), str(d / "eval.tpd"), data_processor="mlm",
                                 vocab_path=str(d / "vocab.txt"), seq_length=32, dynamic_masking=True),
               log=open(os.devnull, "w"))
    torch.manual_seed(0)
    teacher = build_model(load_model_config(str(TEACHER_CONFIG), {"vocab_size": VOCAB}))
    with torch.no_grad():  # sharper attention than a fresh init's near-uniform rows, as a trained teacher has
        for layer in teacher.encoder.transformer:
            for linear in layer.self_attn.linear_layers[:2]:
                linear.weight.mul_(8.0)
    save_state_dict(teacher.state_dict(), str(d / "teacher.bin"))
    shutil.copyfile(TEACHER_CONFIG, d / "teacher_config.json")  # beside the weights
    return {"dir": d, "vocab": str(d / "vocab.txt"), "corpus": str(d / "corpus.txt"), "dataset": str(d / "eval.tpd"),
            "teacher": str(d / "teacher.bin"),
            "one_layer": _config(d / "one_layer.json", layers_num=1, hidden_size=64, emb_size=64,
                                 feedforward_size=256),
            "one_head": _config(d / "one_head.json", heads_num=1, hidden_size=64, emb_size=64,
                                feedforward_size=256),
            "three_layers": _config(d / "three_layers.json", layers_num=3)}


def _teacher(files):
    return load_model(str(TEACHER_CONFIG), files["teacher"])


def _random(config, seed=1):
    torch.manual_seed(seed)
    return load_model(config, None, {"vocab_size": VOCAB})


def _batches(files, **kw):
    return dataset_batches(files["dataset"], **{"batch_size": 4, "max_instances": 8, "seq_length": 32, **kw})


# ---------------------------------------------------------------- the arithmetic
def test_js_of_hand_built_pairs_equals_the_closed_form():
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.2, 0.8]])
    q = torch.tensor([[0.5, 0.5], [0.0, 1.0], [0.2, 0.8]])
    js = js_divergence(p, q)
    assert js.dtype == torch.float64
    # JS([1,0], [1/2,1/2]): m = [3/4, 1/4]; KL(p||m) = ln 4/3, KL(q||m) = (ln 2/3 + ln 2) / 2 = ln(4/3) / 2
    assert js[0].item() == pytest.approx(0.75 * math.log(4 / 3), rel=1e-12)
    assert js[1].item() == pytest.approx(math.log(2), rel=1e-12) and MAX_JS == math.log(2)  # disjoint: ln 2
    assert js[2].item() == 0.0
    assert torch.equal(js_divergence(q, p), js)  # symmetric


def test_js_is_exactly_zero_for_identical_rows_with_zeros():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(3, 5, 7, generator=g), -1) * (torch.rand(3, 5, 7, generator=g) > 0.3)
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-30)
    assert (p == 0).any()
    assert torch.count_nonzero(js_divergence(p, p.clone())) == 0


# ---------------------------------------------------------------- held-out text
def test_a_dataset_is_read_unmasked_in_file_order(files):
    batch = DataLoader(files["dataset"], 4, seed=7, shuffle=False).collate(range(4))
    masked, gold = batch["src"], batch["tgt_mlm"]
    assert (masked == MASK_ID).any()  # the loader masks; the reader must undo it
    src, seg = _batches(files)[0]
    assert not (src == MASK_ID).any() and torch.equal(seg, batch["seg"])
    picked = gold >= 0
    assert torch.equal(src[picked], gold[picked]) and torch.equal(src[~picked], masked[~picked])
    short = _batches(files, seq_length=10)[0][0]
    assert short.shape[1] == 10 and torch.equal(short, src[:, :10])


def test_text_lines_become_cls_tokens_sep_cut_to_seq_length(files):
    tok = build_tokenizer(vocab_path=files["vocab"])
    batches = text_batches(files["corpus"], tok, batch_size=5, max_instances=7, seq_length=6)
    assert [tuple(s.shape) for s, _ in batches] == [(5, 6), (2, 6)]
    src, seg = batches[0]
    assert (src[:, 0] == tok.cls_id).all() and int(seg.sum(1).max()) == 6
    first = open(files["corpus"]).readline().split()
    assert src[0].tolist() == [tok.cls_id, *tok.convert_tokens_to_ids(first[:4]), tok.sep_id]


# ---------------------------------------------------------------- the measurement
def test_the_teacher_against_itself_is_exactly_zero_and_a_random_student_is_not(files):
    teacher = _teacher(files)
    result = attention_divergence(teacher, {"self": _teacher(files), "random": _random(files["one_layer"])},
                                  _batches(files))
    same, rand = result["models"]["self"], result["models"]["random"]
    assert same["js"] == [0.0, 0.0] and same["js_per_head"] == [[0.0, 0.0], [0.0, 0.0]] and same["mean"] == 0.0
    assert same["heads"] == "per-head" and same["teacher_layers"] == [1, 2]
    assert rand["teacher_layers"] == [2] and rand["heads"] == "per-head" and len(rand["js_per_head"][0]) == 2
    assert 1e-3 < rand["js"][0] < MAX_JS
    assert rand["js"][0] == pytest.approx(sum(rand["js_per_head"][0]) / 2, rel=1e-12)
    assert result["instances"] == 8 and result["tokens"] == sum(int((s > 0).sum()) for _, s in _batches(files))


def test_padding_does_not_change_the_result(files):
    teacher, student = _teacher(files), _random(files["one_layer"])
    tight = _batches(files, batch_size=1)  # one instance per batch: no padding at all
    assert all((seg > 0).all() for _, seg in tight)
    padded = [(torch.cat([s, torch.zeros(s.shape[0], 9, dtype=s.dtype)], 1),
               torch.cat([g, torch.zeros(g.shape[0], 9, dtype=g.dtype)], 1)) for s, g in _batches(files)]
    a = attention_divergence(teacher, {"s": student}, tight)
    b = attention_divergence(teacher, {"s": student}, padded)
    assert a["tokens"] == b["tokens"]
    assert b["models"]["s"]["js"] == pytest.approx(a["models"]["s"]["js"], rel=1e-5)
    assert b["models"]["s"]["js_per_head"][0] == pytest.approx(a["models"]["s"]["js_per_head"][0], rel=1e-5)


def test_a_student_with_other_heads_is_compared_head_averaged(files):
    result = attention_divergence(_teacher(files), {"one_head": _random(files["one_head"])}, _batches(files))
    m = result["models"]["one_head"]
    assert m["heads"] == "averaged" and m["heads_num"] == 1 and m["js_per_head"] is None
    assert m["teacher_layers"] == [1, 2] and all(0 < v < MAX_JS for v in m["js"])


def test_refusals_name_the_problem(files):
    teacher = _teacher(files)
    with pytest.raises(UserError, match=r"'deep' has 3 layers and the teacher 2.*multiple"):
        attention_divergence(teacher, {"deep": _random(files["three_layers"])}, _batches(files))
    torch.manual_seed(0)
    other_vocab = load_model(files["one_layer"], None, {"vocab_size": VOCAB + 3})
    with pytest.raises(UserError, match=rf"'wide' has a vocabulary of {VOCAB + 3} tokens and the teacher {VOCAB}"):
        attention_divergence(teacher, {"wide": other_vocab}, _batches(files))
    wid = load_model(str(ROOT / "models" / "wid" / "tiny_64x2_to_32_head.json"), None, {"vocab_size": VOCAB})
    with pytest.raises(UserError, match=r"'unmerged' is a WID model.*merge_compactors"):
        attention_divergence(teacher, {"unmerged": wid}, _batches(files))


# ---------------------------------------------------------------- in-process run and the CLI
def test_run_is_deterministic_for_a_seed_and_reads_text_files(files, tmp_path):
    def run(seed, **kw):
        return run_attention_divergence((files["teacher"], None), {"random": (None, files["one_layer"])},
                                        seed=seed, log=lambda _m: None, **kw)
    a, b, c = run(3, dataset_path=files["dataset"]), run(3, dataset_path=files["dataset"]), \
        run(4, dataset_path=files["dataset"])
    assert a["models"] == b["models"] and a["models"] != c["models"]
    text = run(3, corpus_path=files["corpus"], tokenizer=build_tokenizer(vocab_path=files["vocab"]),
               max_instances=5, output_dir=str(tmp_path))
    assert text["instances"] == 5 and text["models"]["random"]["js"][0] > 0
    png = ["attention_divergence.png"] if HAVE_MATPLOTLIB else []  # optional: no plot without it
    assert sorted(os.listdir(tmp_path)) == ["attention_divergence.json", "attention_divergence.md"] + png


def test_the_cli_writes_the_json_the_table_and_the_heat_map(files, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "attention_divergence.py"),
                          "--teacher", files["teacher"], "--model", f"self={files['teacher']}",
                          "--model", f"narrow=:{files['one_layer']}", "--model", f"one_head=:{files['one_head']}",
                          "--dataset_path", files["dataset"], "--max_instances", "6", "--batch_size", "4",
                          "--output_dir", str(out)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads((out / "attention_divergence.json").read_text())
    assert list(result["models"]) == ["self", "narrow", "one_head"] and result["instances"] == 6
    assert [len(m["js"]) for m in result["models"].values()] == [2, 1, 2]
    table = (out / "attention_divergence.md").read_text().splitlines()
    assert table[0] == "| model | heads | layer 1 | layer 2 | mean |"
    assert table[2] == "| self | per-head | 0 (t1) | 0 (t2) | 0 |"
    assert table[3].startswith("| narrow | per-head | ") and table[3].split(" | ")[3] == "-"
    assert table[4].startswith("| one_head | averaged | ") and "milli-nats" in table[6]
    assert "narrow: JS x 1000 per layer" in run.stdout
    if not HAVE_MATPLOTLIB:  # optional dependency: the JSON and the table only (the no-matplotlib test)
        assert not (out / "attention_divergence.png").exists()
        return
    import matplotlib.image
    image = matplotlib.image.imread(str(out / "attention_divergence.png"))
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > image.shape[0]


@pytest.mark.parametrize("which", ["weights", "dataset", "student"])
def test_bad_input_exits_with_an_error_line_naming_the_file(files, tmp_path, capsys, which):
    missing = str(tmp_path / "missing.bin")
    argv = ["--teacher", files["teacher"], "--model", f"s=:{files['one_layer']}", "--dataset_path", files["dataset"],
            "--output_dir", str(tmp_path / "out")]
    if which == "weights":
        argv[1] = missing
    elif which == "dataset":
        argv[5] = missing = str(tmp_path / "missing.tpd")
    else:
        argv[3] = f"s={missing}"
    with pytest.raises(SystemExit) as exit_:
        run_cli(main, argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and missing in err
    assert ("--teacher" in err) == (which == "weights")
    assert not (tmp_path / "out").exists()


def test_without_matplotlib_the_json_and_table_are_written_with_a_note(files, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    notes = []
    run_attention_divergence((files["teacher"], None), {"self": (files["teacher"], None)}, files["dataset"],
                             str(tmp_path), max_instances=4, log=notes.append)
    assert sorted(os.listdir(tmp_path)) == ["attention_divergence.json", "attention_divergence.md"]
    assert sum("matplotlib is not installed" in n for n in notes) == 1
