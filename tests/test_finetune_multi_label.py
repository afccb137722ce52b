"""Multi-label classification: metrics by hand, reader errors, and train -> infer end to end."""
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from tencentpretrain.errors import UserError
from tencentpretrain.resources import repo_root
from tencentpretrain.tasks.metrics import multi_label_metrics
from tencentpretrain.tasks.multi_label import multi_label_infer_main, multi_label_main
from tencentpretrain.tasks.readers import read_multi_label_tsv

ROOT = repo_root()
VOCAB = os.path.join(ROOT, "datasets", "samples", "vocab.txt")
TINY = ["--config_path", "models/bert/tiny_config.json", "--layers_num", "1", "--vocab_path", VOCAB]
FAST = ["--batch_size", "4", "--seq_length", "16", "--learning_rate", "1e-3", "--report_steps", "1",
        "--device", "cpu"]


def test_metrics_hand_computed():
    labels = [[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0]]
    preds = [[1, 0, 1], [1, 1, 0], [0, 0, 0], [0, 0, 0]]
    m = multi_label_metrics(preds, labels)
    # exact sets: rows 0 and 3 -> 2/4. Micro: tp 3, fp 1, fn 1 -> 6/8.
    # Per label: 0: tp1 fp1 fn1 -> 1/2; 1: tp1 -> 1; 2: tp1 -> 1; macro = 2.5/3.
    assert m == pytest.approx({"acc": 0.5, "micro_f1": 0.75, "macro_f1": 2.5 / 3})
    assert list(multi_label_metrics(preds, labels, "micro_f1"))[:2] == ["micro_f1", "acc"]
    assert multi_label_metrics([[0, 0]], [[0, 0]]) == {"acc": 1.0, "micro_f1": 0.0, "macro_f1": 0.0}
    with pytest.raises(ValueError, match="differ in shape"):
        multi_label_metrics([[0, 1]], [[0, 1, 0]])


def test_reader(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("label\ttext_a\ttext_b\n2,0,2\tthe cat\tthe dog\n1\tcold day\tdid\n")
    ex = read_multi_label_tsv(str(path))
    assert [(e.label, e.text_a, e.text_b, e.line) for e in ex] == [((0, 2), "the cat", "the dog", 2),
                                                                   ((1,), "cold day", "did", 3)]
    for body, msg in [("x,1\tcat\tdog\n", "line 2: bad label 'x,1'"), ("\tcat\tdog\n", "bad label ''"),
                      ("-1\tcat\tdog\n", "label -1 is negative")]:
        path.write_text("label\ttext_a\ttext_b\n" + body)
        with pytest.raises(UserError, match=re.escape(msg)):
            read_multi_label_tsv(str(path))
    path.write_text("text_a\ncat\n")
    with pytest.raises(UserError, match="no 'label' column"):
        read_multi_label_tsv(str(path))
    assert read_multi_label_tsv(str(path), require_label=False)[0].label is None


# Label 0: an animal is mentioned; 1: a place; 2: the weather. Each row has one to three labels.
WORDS = {0: ["cat", "dog"], 1: ["city", "everest"], 2: ["cold", "clear"]}


def _rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = sorted(k for k in WORDS if rng.random() < 0.5) or [rng.randrange(3)]
        words = ["the", "day"] + [rng.choice(WORDS[k]) for k in labels]
        rng.shuffle(words)
        rows.append((labels, " ".join(words)))
    return rows


def _write(path, rows, labelled=True):
    with open(path, "w", encoding="utf-8") as f:
        f.write("label\ttext_a\n" if labelled else "text_a\n")
        for labels, text in rows:
            f.write((",".join(map(str, labels)) + "\t" if labelled else "") + text + "\n")
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("ml")
    return {"train": _write(d / "train.tsv", _rows(32, 1)), "train64": _write(d / "train64.tsv", _rows(64, 1)),
            "dev": _write(d / "dev.tsv", _rows(8, 2)),
            "test": _write(d / "test.tsv", _rows(6, 3)), "nolabel": _write(d / "nl.tsv", _rows(6, 3), False)}


def _train(data, model, extra=()):
    return multi_label_main(TINY + FAST + ["--train_path", data["train"], "--dev_path", data["dev"],
                                           "--epochs_num", "2", "--seed", "5", "--output_model_path", model,
                                           *extra])


def _infer(model, test, pred, extra=()):
    return multi_label_infer_main(TINY + ["--load_model_path", model, "--test_path", test, "--seq_length", "16",
                                          "--prediction_path", pred, *extra])


def test_train_then_infer_is_deterministic(data, tmp_path, capsys):
    model = str(tmp_path / "ml.bin")
    assert _train(data, model, ["--test_path", data["test"]]) == 0
    out = capsys.readouterr().out
    assert "3 labels" in out and "examples/s" in out
    accs = [float(v) for v in re.findall(r"epoch \d dev: acc ([0-9.]+) micro_f1 [0-9.]+ macro_f1", out)]
    assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
    assert re.search(r"test \(.*\): acc [0-9.]+ micro_f1 [0-9.]+ macro_f1 [0-9.]+", out)
    sd = torch.load(model, weights_only=True)
    assert sd["output_layer_2.weight"].shape == (3, 128) and sd["output_layer_1.weight"].shape == (128, 128)

    pred = str(tmp_path / "pred.tsv")
    assert _infer(model, data["nolabel"], pred, ["--output_logits", "--output_prob"]) == 0
    rows = [r.split("\t") for r in open(pred, encoding="utf-8").read().splitlines()]
    assert rows[0] == ["label", "logits", "prob"] and len(rows) == 7
    for label, logits, prob in rows[1:]:
        logits, prob = np.array(logits.split(), float), np.array(prob.split(), float)
        assert len(logits) == 3 and np.allclose(prob, 1 / (1 + np.exp(-logits)), atol=1e-5)
        assert label == ",".join(str(j) for j in range(3) if prob[j] > 0.5)
    assert "6 predictions written" in capsys.readouterr().out

    model2, pred2 = str(tmp_path / "ml2.bin"), str(tmp_path / "pred2.tsv")
    assert _train(data, model2) == 0
    assert _infer(model2, data["test"], pred2, ["--output_logits", "--output_prob"]) == 0
    assert re.search(r"6 predictions written .* \(acc [0-9.]+ micro_f1 [0-9.]+ macro_f1 [0-9.]+ against",
                     capsys.readouterr().out)
    sd2 = torch.load(model2, weights_only=True)
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert open(pred2).read() == open(pred).read()


def test_learns_the_synthetic_labels(data, tmp_path, capsys):
    _train({**data, "train": data["train64"]}, str(tmp_path / "m.bin"),
           ["--epochs_num", "5", "--batch_size", "8", "--learning_rate", "3e-3", "--metric", "micro_f1"])
    f1s = [float(v) for v in re.findall(r"epoch \d dev: micro_f1 ([0-9.]+)", capsys.readouterr().out)]
    assert len(f1s) == 5 and max(f1s) >= 0.8 and max(f1s) > f1s[0] + 0.2, f1s


def test_errors(data, tmp_path):
    model = str(tmp_path / "m.bin")
    bad = tmp_path / "dev.tsv"
    bad.write_text("label\ttext_a\n0,7\tthe cat\n")
    with pytest.raises(UserError, match=r"dev.tsv, line 2: label 7 is out of range for 3 labels"):
        _train({**data, "dev": str(bad)}, model)
    _train(data, model, ["--epochs_num", "1"])
    with pytest.raises(UserError, match="has 3 labels .* but --labels_num asks for 4"):
        _infer(model, data["nolabel"], str(tmp_path / "p.tsv"), ["--labels_num", "4"])
    with pytest.raises(UserError, match=r"line 2: label 7 is out of range for 3 labels"):
        _infer(model, str(bad), str(tmp_path / "p.tsv"))


def test_scripts_run_and_report_errors_without_traceback(data, tmp_path, capsys):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "finetune", "run_classifier_multi_label.py"),
                           *TINY, "--train_path", str(tmp_path / "missing.tsv")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: TSV file" in proc.stderr and "missing.tsv' does not exist" in proc.stderr
    with pytest.raises(SystemExit) as exit_:
        multi_label_infer_main(["--help"])
    assert exit_.value.code == 0
    assert "--output_prob" in capsys.readouterr().out
