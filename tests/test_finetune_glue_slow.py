"""Real GLUE / SQuAD files (../shared/data next to the repository): conversion, scoring and a short fine-tuning run.

Slow; skipped when the data is absent. Two kinds of checks, both exact (no "score in range"):

- Fixed predictions on the real dev files: an oracle, the oracle with every third answer wrong, and a
  constant predictor go through the engine's evaluation path (engine.evaluate -> the task's evaluate),
  and each score must equal the value computed here from the gold labels by the textbook formulas
  (scipy for Pearson). An evaluation that scored a constant or shuffled predictor fails the oracle.
- A tiny model fine-tuned on a slice of each training file: the dev score it prints must equal the score
  of its own dev predictions (written by the inference command line), computed here. No above-chance
  threshold is asserted for it: the model is randomly initialised (no pre-trained checkpoint can be
  downloaded here) and sees 256 rows for 8 steps, so it is at chance level; a threshold a real
  checkpoint reaches would fail for the wrong reason.
"""
import argparse
import json
import os
import re

import pytest
import torch
import torch.nn as nn
from scipy import stats

from tencentpretrain.data.tokenizers import build_tokenizer
from tencentpretrain.resources import repo_root
from tencentpretrain.tasks import glue
from tencentpretrain.tasks.classification import (ClassificationTask, RegressionTask, classifier_infer_main,
                                                  classifier_main, regression_infer_main, regression_main)
from tencentpretrain.tasks.engine import RunConfig, evaluate
from tencentpretrain.tasks.squad import SquadTask, encode_squad, read_squad, squad_main

DATA = os.path.join(os.path.dirname(repo_root()), "shared", "data")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isdir(os.path.join(DATA, "glue")), reason=f"no GLUE data in {DATA}")]
TINY = ["--config_path", "models/bert/tiny_config.json", "--layers_num", "1"]
TRAIN = ["--epochs_num", "1", "--batch_size", "32", "--seq_length", "64", "--learning_rate", "1e-3",
         "--report_steps", "4"]
RUN = RunConfig(batch_size=64, device="cpu")

# task: (fine-tuning entry, inference entry, dev metric, dev rows per class id as ../shared/data/README.md
# lists them (class ids in glue.py's order; RTE: entailment, not_entailment), or the row count for STS-B)
GLUE = {
    "SST-2": (classifier_main, classifier_infer_main, "acc", [428, 444]),
    "CoLA": (classifier_main, classifier_infer_main, "mcc", [322, 721]),
    "MRPC": (classifier_main, classifier_infer_main, "f1", [129, 279]),
    "RTE": (classifier_main, classifier_infer_main, "acc", [146, 131]),
    "STS-B": (regression_main, regression_infer_main, "pearson", 1500),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("glue")
    for task in GLUE:
        glue.main(["--task", task, "--input_dir", os.path.join(DATA, "glue", task), "--output_dir", str(out / task)])
    return out


def _labels(path, regression):
    """The label column of a converted file, read directly (not through the task's reader)."""
    with open(path, encoding="utf-8") as f:
        rows = f.read().splitlines()[1:]
    return [float(r.split("\t")[0]) if regression else int(r.split("\t")[0]) for r in rows if r]


def _score(metric, gold, pred):
    """The GLUE metric from scratch: a binary confusion table, or scipy's Pearson."""
    if metric == "pearson":
        return 0.0 if len(set(pred)) == 1 else float(stats.pearsonr(pred, gold)[0])  # constant: 0 by convention
    tp = sum(p == 1 and g == 1 for p, g in zip(pred, gold))
    tn = sum(p == 0 and g == 0 for p, g in zip(pred, gold))
    fp = sum(p == 1 and g == 0 for p, g in zip(pred, gold))
    fn = sum(p == 0 and g == 1 for p, g in zip(pred, gold))
    if metric == "acc":
        return (tp + tn) / len(gold)
    if metric == "f1":
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    denom = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
    return (tp * tn - fp * fn) / denom if denom else 0.0  # MCC; a constant predictor scores 0


class InOrder(nn.Module):
    """Answers the rows in the order the engine asks for them (evaluation does not shuffle)."""

    def __init__(self, outputs, per_token=False):
        super().__init__()
        self.outputs, self.per_token, self.served = outputs, per_token, 0

    def forward(self, src, seg):
        rows = slice(self.served, self.served + len(src))
        self.served += len(src)
        outs = [o[rows, :src.shape[1]] if self.per_token else o[rows] for o in self.outputs]
        return tuple(outs) if len(outs) > 1 else outs[0]


@pytest.mark.parametrize("task", GLUE)
def test_glue_dev_scores_of_fixed_predictions(task, converted):
    _, _, metric, counts = GLUE[task]
    regression = task == "STS-B"
    dev = str(converted / task / "dev.tsv")
    gold = _labels(dev, regression)
    if regression:
        assert len(gold) == counts and all(0.0 <= g <= 5.0 for g in gold)
    else:
        assert [gold.count(c) for c in (0, 1)] == counts
    scorer = RegressionTask(metric) if regression else ClassificationTask(metric)
    tensors = scorer.encode(scorer.read(dev), build_tokenizer("bert"), 64, dev)
    assert tensors["label"].tolist() == pytest.approx(gold, abs=1e-6)  # STS-B's scores are float32 there

    if regression:  # the oracle, every third score moved by 2.5 (sign alternating), a constant
        predictors = {"oracle": gold, "every third wrong": [g + (2.5 if i % 2 else -2.5) * (i % 3 == 0)
                                                           for i, g in enumerate(gold)],
                      "constant": [2.5] * len(gold)}
    else:
        predictors = {"oracle": gold, "every third wrong": [1 - g if i % 3 == 0 else g for i, g in enumerate(gold)],
                      "constant": [0] * len(gold)}
    for name, pred in predictors.items():
        outputs = torch.tensor(pred)[:, None] if regression else nn.functional.one_hot(torch.tensor(pred), 2) * 3.0
        model = InOrder([outputs.float()])
        metrics = evaluate(model, scorer, tensors, RUN)
        assert model.served == len(gold)
        expected = _score(metric, gold, pred)
        if name == "oracle":
            assert expected == pytest.approx(1.0)
        assert metrics[metric] == pytest.approx(expected, abs=1e-6 if regression else 1e-12), (task, name)
        if not regression:
            assert metrics["acc"] == pytest.approx(_score("acc", gold, pred), abs=1e-12), (task, name)


@pytest.mark.parametrize("task", GLUE)
def test_glue_fine_tuning_prints_the_score_of_its_predictions(task, converted, tmp_path, capsys):
    train_main, infer_main, metric, _ = GLUE[task]
    regression = task == "STS-B"
    dev = str(converted / task / "dev.tsv")
    with open(converted / task / "train.tsv", encoding="utf-8") as f:
        (tmp_path / "train.tsv").write_text("\n".join(f.read().splitlines()[:257]) + "\n", encoding="utf-8")
    model = str(tmp_path / "m.bin")
    assert train_main(TINY + TRAIN + ["--train_path", str(tmp_path / "train.tsv"), "--dev_path", dev,
                                      "--metric", metric, "--output_model_path", model]) == 0
    printed = float(re.search(rf"epoch 1 dev: {metric} (-?[0-9.]+)", capsys.readouterr().out).group(1))
    pred_path = tmp_path / "pred.tsv"
    assert infer_main(TINY + ["--seq_length", "64", "--load_model_path", model, "--test_path", dev,
                              "--prediction_path", str(pred_path)]) == 0
    rows = pred_path.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "label"
    pred = [float(r) if regression else int(r) for r in rows[1:]]
    expected = _score(metric, _labels(dev, regression), pred)
    assert printed == pytest.approx(expected, abs=5.1e-5)  # printed with 4 decimals
    print(f"{task} dev {metric} {printed:.4f}")


# ---------------------------------------------------------------- SQuAD v2.0 (first article of the dev file)
@pytest.fixture(scope="module")
def squad_slice(tmp_path_factory):
    with open(os.path.join(DATA, "squad", "dev-v2.0.json"), encoding="utf-8") as f:
        full = json.load(f)
    part = tmp_path_factory.mktemp("squad") / "v2.json"
    part.write_text(json.dumps({"version": "v2.0", "data": full["data"][:1]}), encoding="utf-8")
    return str(part), full["data"][:1]


def _aligned_window(feature, answer_start, text, max_answer_length=30):
    """(start, end) positions of this window's tokens that spell exactly `text`, or None."""
    starts = [p for p, (s, _) in feature.token_spans.items() if s == answer_start and feature.max_context[p]]
    ends = [p for p, (_, e) in feature.token_spans.items() if e == answer_start + len(text)]
    if starts and ends and 0 <= ends[0] - starts[0] < max_answer_length:
        return starts[0], ends[0]
    return None


def test_squad_v2_scores_of_fixed_predictions(squad_slice):
    path, articles = squad_slice
    qas = [qa for p in articles[0]["paragraphs"] for qa in p["qas"]]
    impossible = sum(bool(qa["is_impossible"]) for qa in qas)
    assert 0 < impossible < len(qas)
    task = SquadTask().bind(argparse.Namespace(doc_stride=64, max_query_length=64), log=lambda msg: None)
    data = encode_squad(read_squad(path), path, build_tokenizer("bert"), 128, 64, 64, training=False,
                        log=lambda msg: None)
    n, width = data.tensors["src"].shape

    # "No answer" everywhere: [CLS] scores 5, every context token -5.
    start, end = torch.full((n, width), -5.0), torch.full((n, width), -5.0)
    start[:, 0] = end[:, 0] = 5.0
    scores = evaluate(InOrder([start, end], per_token=True), task, data, RUN)
    no_answer = 100.0 * impossible / len(qas)
    assert scores == pytest.approx({"f1": no_answer, "exact": no_answer, "total": len(qas), "HasAns_exact": 0.0,
                                    "HasAns_f1": 0.0, "HasAns_total": len(qas) - impossible,
                                    "NoAns_exact": 100.0, "NoAns_f1": 100.0, "NoAns_total": impossible})

    # The first gold answer wherever the tokens spell it exactly (other windows: no answer).
    answered = set()
    for f, feature in enumerate(data.features):
        ex = data.examples[feature.example_index]
        span = None if ex.is_impossible else _aligned_window(feature, ex.answers[0][1], ex.answers[0][0])
        if span:
            start[f, 0] = end[f, 0] = -5.0
            start[f, span[0]], end[f, span[1]] = 5.0, 5.0
            answered.add(ex.qid)
    assert len(answered) > 0.8 * (len(qas) - impossible)  # most answers fall on token boundaries
    scores = evaluate(InOrder([start, end], per_token=True), task, data, RUN)
    right = 100.0 * (len(answered) + impossible) / len(qas)
    assert scores["exact"] == pytest.approx(right) and scores["f1"] >= right
    assert scores["HasAns_exact"] == pytest.approx(100.0 * len(answered) / (len(qas) - impossible))
    assert scores["NoAns_exact"] == 100.0


def test_squad_v2_dev_slice_fine_tunes(squad_slice, tmp_path, capsys):
    path, _ = squad_slice
    assert squad_main(TINY + TRAIN + ["--seq_length", "128", "--doc_stride", "64", "--train_path", path,
                                      "--dev_path", path, "--output_model_path", str(tmp_path / "s.bin")]) == 0
    log = capsys.readouterr().out
    m = re.search(r"epoch 1 v2: f1 ([0-9.]+) exact ([0-9.]+) total (\d+) HasAns_exact ([0-9.]+) .* NoAns_total (\d+)",
                  log)
    assert m and int(m.group(3)) == int(m.group(5)) + int(re.search(r"HasAns_total (\d+)", log).group(1))
