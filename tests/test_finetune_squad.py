"""SQuAD fine-tuning and inference end to end on the tiny v1.1 / v2.0 samples."""
import json
import os
import re

import pytest
import torch

from tencentpretrain.errors import UserError
from tencentpretrain.resources import repo_root
from tencentpretrain.tasks.squad import squad_infer_main, squad_main

SAMPLES = os.path.join(repo_root(), "datasets", "samples", "squad")
# A 345-token vocabulary covering the samples keeps the embedding (and each step) small.
TINY = ["--config_path", "models/bert/tiny_config.json", "--layers_num", "1",
        "--vocab_path", os.path.join(repo_root(), "datasets", "samples", "vocab.txt"), "--device", "cpu"]
# 32 tokens with a question of up to 12 leaves <= 17 context tokens: the samples need 2-3 windows.
SHAPE = ["--seq_length", "32", "--doc_stride", "8", "--max_query_length", "12"]


def test_squad_v1_train_then_infer(tmp_path, capsys):
    v1 = os.path.join(SAMPLES, "tiny-v1.1.json")
    model = str(tmp_path / "squad.bin")
    assert squad_main(TINY + SHAPE + ["--train_path", v1, "--dev_path", v1, "--epochs_num", "12", "--batch_size", "8",
                                      "--learning_rate", "3e-3", "--warmup", "0", "--report_steps", "10",
                                      "--output_model_path", model]) == 0
    out = capsys.readouterr().out
    windows = int(re.search(r"5 questions, (\d+) windows", out).group(1))
    assert windows > 5  # contexts longer than one window are split
    f1 = [float(x) for x in re.findall(r"epoch \d+ tiny-v1.1: f1 ([0-9.]+) exact_match", out)]
    assert len(f1) == 12 and all(0 <= x <= 100 for x in f1)
    assert max(f1) >= 60.0  # the tiny model memorises its 5 training questions
    assert set(torch.load(model, weights_only=True)) >= {"output_layer.weight", "output_layer.bias"}

    pred, nbest = tmp_path / "pred.json", tmp_path / "nbest.json"
    assert squad_infer_main(TINY + SHAPE + ["--load_model_path", model, "--test_path", v1,
                                            "--prediction_path", str(pred), "--nbest_path", str(nbest),
                                            "--n_best_size", "3"]) == 0
    answers = json.loads(pred.read_text(encoding="utf-8"))
    assert sorted(answers) == ["q1", "q2", "q3", "q4", "q5"] and all(isinstance(a, str) for a in answers.values())
    best = json.loads(nbest.read_text(encoding="utf-8"))
    assert all(1 <= len(v) <= 3 and v[0]["text"] == answers[k] for k, v in best.items())
    assert re.search(r"5 answers written to .*pred.json \(exact [0-9.]+ f1 [0-9.]+\)", capsys.readouterr().out)


def test_squad_v2_reports_has_and_no_answer(tmp_path, capsys):
    v2 = os.path.join(SAMPLES, "tiny-v2.0.json")
    model = str(tmp_path / "v2.bin")
    squad_main(TINY + SHAPE + ["--train_path", v2, "--dev_path", v2, "--epochs_num", "1", "--batch_size", "8",
                               "--output_model_path", model])
    out = capsys.readouterr().out
    assert "SQuAD v2.0, 4 questions" in out
    assert re.search(r"epoch 1 tiny-v2.0: f1 [0-9.]+ exact [0-9.]+ total 4 HasAns_exact [0-9.]+ HasAns_f1 [0-9.]+ "
                     r"HasAns_total 2 NoAns_exact [0-9.]+ NoAns_f1 [0-9.]+ NoAns_total 2", out)
    pred, odds = tmp_path / "p.json", tmp_path / "odds.json"
    squad_infer_main(TINY + SHAPE + ["--load_model_path", model, "--test_path", v2, "--prediction_path", str(pred),
                                     "--null_odds_path", str(odds), "--null_score_diff_threshold=-1e9"])
    assert json.loads(pred.read_text()) == {"p1": "", "p2": "", "p3": "", "p4": ""}  # always below threshold
    assert sorted(json.loads(odds.read_text())) == ["p1", "p2", "p3", "p4"]


def test_squad_bad_inputs(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "a", "answers": []}]}]}]}')
    with pytest.raises(UserError, match=r"qas\[0\] has no 'question'"):
        squad_main(TINY + ["--train_path", str(bad)])
    with pytest.raises(UserError, match="--doc_stride must be at least 1"):
        squad_main(TINY + ["--train_path", str(bad), "--doc_stride", "0"])
    with pytest.raises(UserError, match="has no span head"):
        torch.save({"output_layer_2.weight": torch.zeros(2, 2)}, tmp_path / "cls.bin")
        squad_infer_main(TINY + ["--load_model_path", str(tmp_path / "cls.bin"), "--test_path", str(bad),
                                 "--prediction_path", str(tmp_path / "p.json")])
