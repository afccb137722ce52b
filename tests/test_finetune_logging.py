"""Fine-tuning and inference take TencentPretrain's --log_path / --log_level: the progress and dev lines
reach the terminal as before and are also appended to the file, with a time and level prefix."""
import os

import pytest

from tencentpretrain.errors import UserError
from tencentpretrain.resources import repo_root
from tencentpretrain.tasks.classification import classifier_infer_main, classifier_main

TINY = ["--config_path", os.path.join(repo_root(), "models", "bert", "tiny_config.json"), "--layers_num", "1",
        "--vocab_path", os.path.join(repo_root(), "datasets", "samples", "vocab.txt"), "--device", "cpu",
        "--batch_size", "4", "--seq_length", "32", "--epochs_num", "1", "--report_steps", "1"]
ROWS = "label\ttext_a\n" + "".join(f"{i % 2}\tthe soup was {'warm' if i % 2 else 'cold'} .\n" for i in range(8))


def test_log_path_gets_the_progress_and_dev_lines_and_the_terminal_keeps_them(tmp_path, capsys):
    data = tmp_path / "train.tsv"
    data.write_text(ROWS, encoding="utf-8")
    log = tmp_path / "logs" / "ft.log"
    os.makedirs(log.parent)
    model = tmp_path / "clf.bin"
    classifier_main(TINY + ["--train_path", str(data), "--dev_path", str(data), "--output_model_path", str(model),
                            "--log_path", str(log)])
    terminal = capsys.readouterr().out
    written = log.read_text(encoding="utf-8").splitlines()
    dev = [line for line in written if "epoch 1 train: acc" in line]  # the dev file is train.tsv
    assert dev and dev[0].split("] ", 1)[1] in terminal and " INFO] " in dev[0]  # same line, prefixed
    assert any("loss" in line and "examples/s" in line for line in written)
    classifier_infer_main(["--load_model_path", str(model), "--vocab_path", TINY[5], "--test_path", str(data),
                           "--prediction_path", str(tmp_path / "pred.tsv"), "--log_path", str(log),
                           "--log_level", "ERROR"])
    assert "pred.tsv" not in capsys.readouterr().out  # ERROR: the terminal is quiet ...
    assert len(log.read_text(encoding="utf-8").splitlines()) > len(written)  # ... the file still gets INFO


def test_an_unwritable_log_path_is_refused_before_training(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="--log_path"):
        classifier_main(TINY + ["--train_path", str(tmp_path / "file"), "--output_model_path",
                                str(tmp_path / "m.bin"), "--log_path", str(tmp_path / "file" / "ft.log")])
    assert not (tmp_path / "m.bin").exists()
