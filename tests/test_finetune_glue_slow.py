"""Real GLUE / SQuAD files (../shared/data next to the repository): a few fine-tuning steps, dev scores in range.

Slow; skipped when the data is absent. Only a slice of each training file is used: the point is
that official files convert, train and score, not the score itself.
"""
import json
import os
import re

import pytest

from tencentpretrain.resources import repo_root
from tencentpretrain.tasks import glue
from tencentpretrain.tasks.classification import classifier_main, regression_main
from tencentpretrain.tasks.squad import squad_main

DATA = os.path.join(os.path.dirname(repo_root()), "shared", "data")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, "glue")), reason=f"no GLUE data in {DATA}")]
TINY = ["--config_path", "models/bert/tiny_config.json", "--layers_num", "1", "--epochs_num", "1",
        "--batch_size", "32", "--seq_length", "64", "--learning_rate", "1e-3", "--report_steps", "4"]


def _slice(src, dst, rows):
    with open(src, encoding="utf-8") as f:
        lines = f.read().splitlines()
    with open(dst, "w", encoding="utf-8") as f:
        f.write("\n".join(lines[:rows + 1]) + "\n")
    return dst


@pytest.mark.parametrize("task, main, metric, low", [
    ("SST-2", classifier_main, "acc", 0.0), ("CoLA", classifier_main, "mcc", -1.0),
    ("MRPC", classifier_main, "f1", 0.0), ("RTE", classifier_main, "acc", 0.0),
    ("STS-B", regression_main, "pearson", -1.0)])
def test_glue_dev_scores(task, main, metric, low, tmp_path, capsys):
    out = tmp_path / task
    glue.main(["--task", task, "--input_dir", os.path.join(DATA, "glue", task), "--output_dir", str(out)])
    train = _slice(out / "train.tsv", tmp_path / "train.tsv", 256)
    main(TINY + ["--train_path", str(train), "--dev_path", str(out / "dev.tsv"), "--metric", metric,
                 "--output_model_path", str(tmp_path / "m.bin")])
    log = capsys.readouterr().out
    score = float(re.search(rf"epoch 1 dev: {metric} (-?[0-9.]+)", log).group(1))
    assert low <= score <= 1.0
    print(f"{task} dev {metric} {score:.4f}")


def test_squad_v2_dev_slice(tmp_path, capsys):
    with open(os.path.join(DATA, "squad", "dev-v2.0.json"), encoding="utf-8") as f:
        full = json.load(f)
    part = tmp_path / "v2.json"
    part.write_text(json.dumps({"version": "v2.0", "data": full["data"][:1]}), encoding="utf-8")
    squad_main(TINY + ["--seq_length", "128", "--doc_stride", "64", "--train_path", str(part),
                       "--dev_path", str(part), "--output_model_path", str(tmp_path / "s.bin")])
    log = capsys.readouterr().out
    m = re.search(r"epoch 1 v2: f1 ([0-9.]+) exact ([0-9.]+) total (\d+) HasAns_exact ([0-9.]+) .* NoAns_total (\d+)", log)
    assert m and 0 <= float(m.group(1)) <= 100 and int(m.group(5)) > 0
