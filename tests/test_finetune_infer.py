"""Inference checks: --labels_num against the model, and inference/run_regression_infer.py."""
import os
import re
import subprocess
import sys

import pytest

from tencentpretrain.errors import UserError
from tencentpretrain.resources import repo_root
from tencentpretrain.tasks.classification import (classifier_infer_main, classifier_main, regression_infer_main,
                                                  regression_main)

SAMPLES = os.path.join(repo_root(), "datasets", "samples", "tsv")
TINY = ["--config_path", os.path.join(repo_root(), "models", "bert", "tiny_config.json"), "--layers_num", "1",
        "--vocab_path", os.path.join(repo_root(), "datasets", "samples", "vocab.txt"), "--device", "cpu"]
FAST = ["--batch_size", "4", "--seq_length", "32", "--epochs_num", "1", "--report_steps", "100"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("infer")
    classifier_main(TINY + FAST + ["--train_path", os.path.join(SAMPLES, "single_train.tsv"),
                                   "--output_model_path", str(d / "clf.bin")])
    regression_main(TINY + FAST + ["--train_path", os.path.join(SAMPLES, "regression_train.tsv"),
                                   "--output_model_path", str(d / "reg.bin")])
    return d


def _classify(models, tmp_path, *extra):
    pred = tmp_path / "p.tsv"
    classifier_infer_main(TINY + ["--load_model_path", str(models / "clf.bin"), "--seq_length", "32",
                                  "--test_path", os.path.join(SAMPLES, "single_test.tsv"),
                                  "--prediction_path", str(pred), "--output_logits", *extra])
    return [r.split("\t") for r in pred.read_text().splitlines()]


def test_labels_num_is_checked_against_the_model(models, tmp_path):
    with pytest.raises(UserError, match=r"clf.bin has 2 labels \(output_layer_2 has 2 rows\), but --labels_num asks "
                                        r"for 3; pass --labels_num 2, leave it out"):
        _classify(models, tmp_path, "--labels_num", "3")
    assert not (tmp_path / "p.tsv").exists()
    given = _classify(models, tmp_path, "--labels_num", "2")
    omitted = _classify(models, tmp_path)
    assert given == omitted and len(omitted) == 4
    assert all(len(logits.split()) == 2 for _, logits in omitted[1:])  # 2 labels, taken from the model


def test_labels_num_mismatch_exits_2_with_the_message(models, tmp_path):
    script = os.path.join(repo_root(), "inference", "run_classifier_infer.py")
    res = subprocess.run([sys.executable, script, *TINY, "--load_model_path", str(models / "clf.bin"),
                          "--test_path", os.path.join(SAMPLES, "single_test.tsv"), "--labels_num", "3",
                          "--prediction_path", str(tmp_path / "p.tsv")], capture_output=True, text=True)
    assert res.returncode == 2
    assert "has 2 labels" in res.stderr and "asks for 3" in res.stderr and "Traceback" not in res.stderr


def test_regression_infer_writes_one_score_per_line(models, tmp_path, capsys):
    test = tmp_path / "test.tsv"
    rows = open(os.path.join(SAMPLES, "regression_train.tsv"), encoding="utf-8").read().splitlines()
    test.write_text("\n".join(["text_a\ttext_b"] + [r.split("\t", 1)[1] for r in rows[1:]]) + "\n")
    pred = tmp_path / "scores.tsv"
    assert regression_infer_main(TINY + ["--load_model_path", str(models / "reg.bin"), "--test_path", str(test),
                                         "--prediction_path", str(pred), "--seq_length", "32"]) == 0
    lines = pred.read_text().splitlines()
    assert lines[0] == "label" and len(lines) == len(rows)
    scores = [float(x) for x in lines[1:]]
    # the same numbers as the classifier inference's regression column, at full precision
    classifier_infer_main(TINY + ["--load_model_path", str(models / "reg.bin"), "--test_path", str(test),
                                  "--prediction_path", str(tmp_path / "c.tsv"), "--seq_length", "32"])
    short = [float(r) for r in (tmp_path / "c.tsv").read_text().splitlines()[1:]]
    assert scores == pytest.approx(short, rel=1e-5) and len(set(scores)) > 1
    assert all(len(x) > 8 for x in lines[1:])  # repr of the float32 value, not rounded to 6 digits
    capsys.readouterr()
    # a labelled file is also scored
    regression_infer_main(TINY + ["--load_model_path", str(models / "reg.bin"), "--prediction_path", str(pred),
                                  "--test_path", os.path.join(SAMPLES, "regression_train.tsv"), "--seq_length", "32"])
    assert re.search(r"4 predictions written to .*scores.tsv \(pearson -?[0-9.]+ spearman", capsys.readouterr().out)
    with pytest.raises(UserError, match=r"clf.bin is a classifier with 2 labels, not a regression model .*"
                                        r"use inference/run_classifier_infer.py"):
        regression_infer_main(TINY + ["--load_model_path", str(models / "clf.bin"), "--test_path", str(test),
                                      "--prediction_path", str(pred)])


def test_the_config_written_beside_the_model_never_replaces_the_input_config(tmp_path):
    config = tmp_path / "student_config.json"
    config.write_text(open(TINY[1], encoding="utf-8").read())
    before = config.read_bytes()
    with pytest.raises(UserError, match=r"--output_model_path .*student.bin would overwrite --config_path "
                                        r".*student_config.json"):
        classifier_main(["--config_path", str(config), *TINY[2:], *FAST, "--output_model_path",
                         str(tmp_path / "student.bin"), "--train_path", os.path.join(SAMPLES, "single_train.tsv")])
    assert config.read_bytes() == before and not (tmp_path / "student.bin").exists()
