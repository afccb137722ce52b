"""Known predictions through the fine-tuning engine's evaluation path, scored against hand-computed values.

A stub model answers every input row with outputs written down in advance (looked up by the row's
non-padding tokens, so the engine's batching and column trimming are exercised), and fit() runs one
epoch at learning rate 0 so the dev report it prints and returns is the score of exactly those outputs.
The expected numbers are worked out by hand in the comments (SQuAD: the official scripts' rules), or
with scipy for the correlations, never with the project's own metric functions.
"""
import argparse
import json
import re

import pytest
import torch
import torch.nn as nn
from scipy import stats

from tencentpretrain.data.tokenizers import build_tokenizer
from tencentpretrain.tasks.classification import ClassificationTask, RegressionTask
from tencentpretrain.tasks.engine import RunConfig, evaluate, fit
from tencentpretrain.tasks.squad import SquadTask, encode_squad, read_squad


class Fixed(nn.Module):
    """Outputs fixed per input row: `outputs` holds one tensor per model output, one row per input row.

    per_token: the outputs are [N, L] position scores, cut to the batch's (trimmed) width.
    """

    def __init__(self, tensors, outputs, per_token=False):
        super().__init__()
        self.table = {self._key(s, g): i for i, (s, g) in enumerate(zip(tensors["src"], tensors["seg"]))}
        self.outputs, self.per_token = outputs, per_token
        self.bias = nn.Parameter(torch.zeros(()))  # gives the training loss a graph; lr 0 keeps it 0

    def forward(self, src, seg):
        idx = torch.tensor([self.table[self._key(s, g)] for s, g in zip(src, seg)])
        outs = [o[idx][:, :src.shape[1]] if self.per_token else o[idx] for o in self.outputs]
        outs = [o + self.bias for o in outs]
        return tuple(outs) if len(outs) > 1 else outs[0]

    @staticmethod
    def _key(src, seg):
        return tuple(src[seg > 0].tolist())


def _rows(n):
    """n distinct [CLS] x [SEP] rows (tokens 101, 1000 + i, 102) with segment 1."""
    src = torch.tensor([[101, 1000 + i, 102] for i in range(n)])
    return src, torch.ones_like(src)


def _score(model, task, tensors):
    """(printed dev line, returned metrics) of one epoch at lr 0, plus a direct engine.evaluate."""
    logs = []
    run = RunConfig(epochs_num=1, batch_size=3, learning_rate=0.0, warmup=0.0, report_steps=100, seed=1)
    result = fit(model, task, tensors, [("dev", tensors)], run, None, log=logs.append)
    assert result["best"] == evaluate(model, task, tensors, run)
    (line,) = [l for l in logs if l.startswith("epoch 1 dev: ")]
    return line, result["best"]


# labels 1 1 1 1 0 0 0 0 against predictions 1 1 1 0 0 0 1 1:
# TP 3, FN 1, TN 2, FP 2 -> acc 5/8, F1 2*3 / (2*3 + 2 + 1) = 2/3,
# MCC (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 - 2) / sqrt(5*4*4*3) = 4 / sqrt(240).
LABELS = [1, 1, 1, 1, 0, 0, 0, 0]
PREDS = [1, 1, 1, 0, 0, 0, 1, 1]
ACC, F1, MCC = 5 / 8, 2 / 3, 4 / 240 ** 0.5


def _classification_data():
    src, seg = _rows(8)
    # logits whose argmax is PREDS, with margins that differ from row to row
    logits = torch.tensor([[-0.3 * i, 0.2 * i + 0.1] if p else [0.5 + i, -i] for i, p in enumerate(PREDS)])
    return {"src": src, "seg": seg, "label": torch.tensor(LABELS)}, logits


@pytest.mark.parametrize("metric, expected, printed", [
    ("acc", {"acc": ACC}, "acc 0.6250"),
    ("f1", {"f1": F1, "acc": ACC, "acc_and_f1": (ACC + F1) / 2}, "f1 0.6667 acc 0.6250 acc_and_f1 0.6458"),
    ("mcc", {"mcc": MCC, "acc": ACC}, "mcc 0.2582 acc 0.6250"),
])
def test_classification_metrics_of_fixed_predictions(metric, expected, printed):
    tensors, logits = _classification_data()
    line, metrics = _score(Fixed(tensors, [logits]), ClassificationTask(metric), tensors)
    assert list(metrics) == list(expected)  # the chosen metric first: it picks the best epoch
    assert metrics == pytest.approx(expected, abs=1e-12)
    assert line == f"epoch 1 dev: {printed} (best)"


def test_regression_metrics_of_fixed_predictions():
    src, seg = _rows(4)
    labels, preds = [0.0, 1.0, 2.0, 3.0], [0.0, 20.0, 1.0, 300.0]
    tensors = {"src": src, "seg": seg, "label": torch.tensor(labels)}
    line, metrics = _score(Fixed(tensors, [torch.tensor(preds)[:, None]]), RegressionTask("spearman"), tensors)
    # ranks of the predictions 1 3 2 4 against 1 2 3 4: centred -1.5 .5 -.5 1.5 and -1.5 -.5 .5 1.5,
    # covariance 2.25 - .25 - .25 + 2.25 = 4 over variance 5: Spearman 0.8
    pearson = stats.pearsonr(preds, labels)[0]
    assert metrics == pytest.approx({"spearman": 0.8, "pearson": pearson, "corr": (0.8 + pearson) / 2}, abs=1e-9)
    assert list(metrics)[0] == "spearman"
    assert line == f"epoch 1 dev: spearman 0.8000 pearson {pearson:.4f} corr {(0.8 + pearson) / 2:.4f} (best)"


# ---------------------------------------------------------------- SQuAD
CONTEXT = "the soup was warm and the staff were kind . i would happily stay here again ."
# (question, gold answers, the answer the stub model points at; None: the [CLS] token, i.e. no answer)
QUESTIONS = [
    ("how was the soup ?", ["warm"], "warm"),                          # EM 1, F1 1
    ("who was kind ?", ["the staff"], "staff were kind"),              # gold "staff" (article dropped) vs 3
                                                                       # tokens: P 1/3, R 1 -> F1 0.5, EM 0
    ("would i stay ?", ["happily"], "here again"),                     # EM 0, F1 0
    ("what was warm ?", ["the soup", "soup was warm"], "the soup was"),  # "soup was" vs "soup": P 1/2, R 1 ->
                                                                       # 2/3; vs "soup was warm": P 1, R 2/3
                                                                       # -> 0.8; the best gold counts: 0.8
]
# v1.1 over the 4: EM 1/4 = 25, F1 (1 + .5 + 0 + .8) / 4 = 57.5
V1 = {"f1": 57.5, "exact_match": 25.0, "total": 4}
# v2.0 adds an unanswerable question answered "" (EM = F1 = 1) and points "would i stay ?" at [CLS]
# (answers "", which scores 0 against "happily"): EM 2/5 = 40, F1 (1 + .5 + 0 + .8 + 1) / 5 = 66;
# HasAns: the 4 answerable ones, EM 1/4 = 25, F1 (1 + .5 + 0 + .8) / 4 = 57.5; NoAns: 1 of 1.
V2_QUESTIONS = QUESTIONS[:2] + [("would i stay ?", ["happily"], None)] + QUESTIONS[3:] + \
    [("what was cold ?", [], None)]
V2 = {"f1": 66.0, "exact": 40.0, "total": 5, "HasAns_exact": 25.0, "HasAns_f1": 57.5, "HasAns_total": 4,
      "NoAns_exact": 100.0, "NoAns_f1": 100.0, "NoAns_total": 1}


def _squad_file(path, questions, version_2):
    qas = []
    for i, (question, golds, _) in enumerate(questions):
        qa = {"id": f"q{i}", "question": question,
              "answers": [{"text": g, "answer_start": CONTEXT.index(g)} for g in golds]}
        if version_2:
            qa["is_impossible"] = not golds
        qas.append(qa)
    path.write_text(json.dumps({"version": "v2.0" if version_2 else "1.1",
                                "data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}))
    return str(path)


def _pointing_logits(data, questions):
    """Start/end scores per window: 5 at the chosen answer's first/last token (or [CLS]), -5 elsewhere."""
    n, width = data.tensors["src"].shape
    start, end = torch.full((n, width), -5.0), torch.full((n, width), -5.0)
    for f, feature in enumerate(data.features):
        answer = questions[feature.example_index][2]
        if answer is None:
            start[f, 0] = end[f, 0] = 5.0
            continue
        a = CONTEXT.index(answer)
        (s,) = [p for p, (cs, _) in feature.token_spans.items() if cs == a]
        (e,) = [p for p, (_, ce) in feature.token_spans.items() if ce == a + len(answer)]
        start[f, s], end[f, e] = 5.0, 5.0
    return start, end


@pytest.mark.parametrize("version_2", [False, True])
def test_squad_metrics_of_fixed_spans(version_2, tmp_path):
    questions = V2_QUESTIONS if version_2 else QUESTIONS
    path = _squad_file(tmp_path / "squad.json", questions, version_2)
    task = SquadTask().bind(argparse.Namespace(doc_stride=128, max_query_length=64), log=lambda msg: None)
    tokenizer = build_tokenizer("bert")
    dev = encode_squad(read_squad(path), path, tokenizer, 64, 128, 64, training=False, log=lambda msg: None)
    train = encode_squad(read_squad(path), path, tokenizer, 64, 128, 64, training=True, log=lambda msg: None)
    assert len(dev.features) == len(questions)  # one window each: the pointers below are unambiguous
    model = Fixed(dev.tensors, _pointing_logits(dev, questions), per_token=True)

    logs = []
    run = RunConfig(epochs_num=1, batch_size=2, learning_rate=0.0, warmup=0.0, report_steps=100)
    result = fit(model, task, train.tensors, [("squad", dev)], run, None, log=logs.append)
    expected = V2 if version_2 else V1
    assert result["best"] == pytest.approx(expected, abs=1e-9)
    assert list(result["best"])[0] == "f1"
    (line,) = [l for l in logs if l.startswith("epoch 1 squad: ")]
    assert line.startswith("epoch 1 squad: " + ("f1 66.0000 exact 40.0000 total 5 HasAns_exact 25.0000" if version_2
                                                else "f1 57.5000 exact_match 25.0000 total 4"))
    predictions = task.predict(model, dev, run)[0]
    assert predictions == {f"q{i}": a or "" for i, (_, _, a) in enumerate(questions)}
    assert re.search(r"best dev f1 (57\.5|66\.0)000 at epoch 1", logs[-1])
