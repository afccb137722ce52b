"""Fine-tuning and inference end to end on tiny data with a tiny model (library calls and CLIs)."""
import os
import re
import subprocess
import sys

import pytest
import torch

from tencentpretrain.errors import UserError
from tencentpretrain.resources import repo_root
from tencentpretrain.tasks import glue
from tencentpretrain.tasks.classification import classifier_infer_main, classifier_main, regression_main

ROOT = repo_root()
# A 345-token vocabulary covering the samples keeps the embedding (and each step) small.
TINY = ["--config_path", "models/bert/tiny_config.json", "--layers_num", "1",
        "--vocab_path", os.path.join(repo_root(), "datasets", "samples", "vocab.txt")]
FAST = ["--batch_size", "4", "--seq_length", "32", "--learning_rate", "1e-3", "--report_steps", "1",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("glue")
    glue.main(["--task", "all", "--input_dir", os.path.join(ROOT, "datasets", "samples", "glue"),
               "--output_dir", str(out)])
    return out


def _epoch_metrics(text, name):
    return [float(v) for v in re.findall(rf"epoch \d+ {name}: \w+ ([0-9.\-]+)", text)]


def test_classifier_train_then_infer(data, tmp_path, capsys):
    model = str(tmp_path / "sst2.bin")
    assert classifier_main(TINY + FAST + ["--train_path", str(data / "SST-2" / "train.tsv"),
                                          "--dev_path", str(data / "SST-2" / "dev.tsv"),
                                          "--test_path", str(data / "SST-2" / "dev.tsv"),
                                          "--epochs_num", "2", "--output_model_path", model]) == 0
    out = capsys.readouterr().out
    assert "2 labels" in out and "examples/s" in out
    accs = _epoch_metrics(out, "dev")
    assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
    assert re.search(r"test \(.*\): acc [0-9.]+", out) and f"model saved to {model}" in out
    sd = torch.load(model, weights_only=True)
    assert sd["output_layer_2.weight"].shape == (2, 128) and sd["output_layer_1.weight"].shape == (128, 128)
    assert not any(k.startswith("target.") for k in sd)

    pred = tmp_path / "pred.tsv"
    base = TINY + ["--load_model_path", model, "--test_path", str(data / "SST-2" / "test.tsv"),
                   "--seq_length", "32", "--prediction_path", str(pred)]
    assert classifier_infer_main(base) == 0
    rows = pred.read_text().splitlines()
    assert rows[0] == "label" and len(rows) == 4 and all(r in ("0", "1") for r in rows[1:])
    assert classifier_infer_main(base + ["--output_logits", "--output_prob"]) == 0
    rows = [r.split("\t") for r in pred.read_text().splitlines()]
    assert rows[0] == ["label", "logits", "prob"]
    for label, logits, prob in rows[1:]:
        logits, prob = [float(x) for x in logits.split()], [float(x) for x in prob.split()]
        assert len(logits) == 2 and sum(prob) == pytest.approx(1.0, abs=1e-4)
        assert int(label) == max(range(2), key=lambda i: logits[i])


def test_mnli_matched_and_mismatched_with_accumulation_and_bf16(data, tmp_path, capsys):
    mnli = data / "MNLI"
    classifier_main(TINY + FAST + ["--train_path", str(mnli / "train.tsv"), "--dev_path",
                                   str(mnli / "dev_matched.tsv"), str(mnli / "dev_mismatched.tsv"),
                                   "--epochs_num", "1", "--accumulation_steps", "2", "--bf16",
                                   "--output_model_path", str(tmp_path / "m.bin")])
    out = capsys.readouterr().out
    assert "3 labels" in out and "1 epochs x 1 steps of 8 examples" in out and "bf16" in out
    assert len(_epoch_metrics(out, "dev_matched")) == 1 and len(_epoch_metrics(out, "dev_mismatched")) == 1


def test_cola_mcc_and_mrpc_f1_metrics(data, tmp_path, capsys):
    classifier_main(TINY + FAST + ["--train_path", str(data / "CoLA" / "train.tsv"), "--dev_path",
                                   str(data / "CoLA" / "dev.tsv"), "--epochs_num", "1", "--metric", "mcc",
                                   "--output_model_path", str(tmp_path / "c.bin")])
    out = capsys.readouterr().out
    assert re.search(r"epoch 1 dev: mcc -?[0-9.]+ acc [0-9.]+", out)
    classifier_main(TINY + FAST + ["--train_path", str(data / "MRPC" / "train.tsv"), "--dev_path",
                                   str(data / "MRPC" / "dev.tsv"), "--epochs_num", "1", "--metric", "f1",
                                   "--output_model_path", str(tmp_path / "c.bin")])
    assert re.search(r"epoch 1 dev: f1 [0-9.]+ acc [0-9.]+ acc_and_f1", capsys.readouterr().out)


def test_regression_train_then_infer(data, tmp_path, capsys):
    model = str(tmp_path / "stsb.bin")
    assert regression_main(TINY + FAST + ["--train_path", str(data / "STS-B" / "train.tsv"), "--dev_path",
                                          str(data / "STS-B" / "dev.tsv"), "--epochs_num", "2",
                                          "--output_model_path", model]) == 0
    out = capsys.readouterr().out
    assert re.search(r"epoch 2 dev: pearson -?[0-9.]+ spearman -?[0-9.]+ corr", out)
    pred = tmp_path / "p.tsv"
    classifier_infer_main(TINY + ["--load_model_path", model, "--test_path", str(data / "STS-B" / "test.tsv"),
                                  "--prediction_path", str(pred), "--output_logits"])
    rows = [r.split("\t") for r in pred.read_text().splitlines()]
    assert rows[0] == ["label", "logits"] and len(rows) == 3
    assert all(float(r[0]) == pytest.approx(float(r[1]), abs=1e-4) for r in rows[1:])


def test_pretrained_checkpoint_loads_into_task_model(tmp_path):
    from tencentpretrain.config import load_model_config
    from tencentpretrain.model_builder import build_model
    from tencentpretrain.model_io import save_state_dict
    from tencentpretrain.tasks.heads import build_task_model
    cfg = load_model_config(os.path.join(ROOT, "models/bert/tiny_config.json"), {"layers_num": 1, "vocab_size": 100})
    pre = build_model(cfg)
    path = str(tmp_path / "pre.bin")
    save_state_dict(pre.state_dict(), path)
    logs = []
    model = build_task_model(cfg, "classifier", 3, path, log=logs.append)
    assert torch.equal(model.embedding.word.embedding.weight, pre.embedding.word.embedding.weight)
    assert torch.equal(model.output_layer_1.weight, pre.target.sp.linear_1.weight)  # pooler inherited
    assert "new head: output_layer_2 (pooler from target.sp.linear_1)" in logs[0]
    span = build_task_model(cfg, "span", pretrained_model_path=path, log=logs.append)
    assert torch.equal(span.encoder.transformer[0].feed_forward.linear_1.weight,
                       pre.encoder.transformer[0].feed_forward.linear_1.weight)
    wrong = load_model_config(os.path.join(ROOT, "models/bert/tiny_config.json"), {"layers_num": 2, "vocab_size": 100})
    with pytest.raises(UserError, match="model keys missing from the checkpoint: encoder.transformer.1"):
        build_task_model(wrong, "classifier", 2, path, log=logs.append)


def test_labels_out_of_range_and_bad_model(data, tmp_path):
    with pytest.raises(UserError, match=r"line 2: label 1 is out of range for 1 labels"):
        classifier_main(TINY + FAST + ["--train_path", str(data / "SST-2" / "train.tsv"), "--labels_num", "1"])
    mnli = data / "MNLI"
    with pytest.raises(UserError, match=r"dev_matched.tsv, line 3: label 2 is out of range for 2 labels"):
        classifier_main(TINY + FAST + ["--train_path", str(data / "SST-2" / "train.tsv"),
                                       "--dev_path", str(mnli / "dev_matched.tsv")])
    with pytest.raises(UserError, match="--seq_length 600 exceeds the model's max_seq_length 512"):
        classifier_main(TINY + ["--train_path", str(data / "SST-2" / "train.tsv"), "--seq_length", "600"])
    torch.save({"embedding.word.embedding.weight": torch.zeros(2, 2)}, tmp_path / "x.bin")
    with pytest.raises(UserError, match="has no classifier head"):
        classifier_infer_main(TINY + ["--load_model_path", str(tmp_path / "x.bin"), "--test_path",
                                      str(data / "SST-2" / "test.tsv"), "--prediction_path", str(tmp_path / "p")])


def test_scripts_run_from_any_directory_and_exit_2_on_bad_input(data, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("label\ttext_a\npositive\tgreat\n")
    script = os.path.join(ROOT, "finetune", "run_classifier.py")
    res = subprocess.run([sys.executable, script, *TINY, "--train_path", str(bad)], cwd=str(tmp_path),
                         capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: {bad}, line 2: unknown label 'positive'; labels must be an integer class id (0, 1, ...). "
        "Convert GLUE label strings with scripts/glue_to_tsv.py")
    res = subprocess.run([sys.executable, script, *TINY, *FAST, "--train_path",
                          os.path.join(ROOT, "datasets", "samples", "tsv", "single_train.tsv"),
                          "--epochs_num", "1", "--output_model_path", "out/model.bin"],
                         cwd=str(tmp_path), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "model.bin").is_file() and "done: 3 steps" in res.stdout
