"""Each metric against values computed by hand (the arithmetic is in the comments)."""
import math

import pytest

from tencentpretrain.tasks import metrics as M


def test_accuracy():
    assert M.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5


def test_f1_binary():
    # tp = 2 (positions 0, 4), fp = 1 (1), fn = 1 (3): F1 = 2*2 / (2*2 + 1 + 1) = 4/6
    assert M.f1_binary([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(4 / 6)
    assert M.f1_binary([0, 0], [1, 1]) == 0.0
    out = M.classification_metrics([1, 1, 0, 0, 1], [1, 0, 0, 1, 1], "f1")
    assert list(out)[0] == "f1" and out["acc"] == pytest.approx(0.6)
    assert out["acc_and_f1"] == pytest.approx((0.6 + 4 / 6) / 2)


def test_matthews_binary_and_multiclass():
    # tp 2, tn 1, fp 1, fn 1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    assert M.matthews_corr([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]) == pytest.approx(1 / 6)
    assert M.matthews_corr([1, 1, 1], [1, 0, 1]) == 0.0  # constant predictor
    assert M.matthews_corr([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(1.0)
    assert M.matthews_corr([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    # 3 classes: correct 2, n 4, pred counts (2,1,1), true counts (1,2,1):
    # (2*4 - (2+2+1)) / sqrt((16-6)(16-6)) = 3/10
    assert M.matthews_corr([0, 1, 2, 0], [0, 1, 1, 2]) == pytest.approx(0.3)
    assert M.classification_metrics([0, 1], [0, 0], "mcc")["mcc"] == 0.0


def test_pearson_spearman():
    # x - mean = (-1, 0, 1), y - mean = (-4/3, -1/3, 5/3): 3 / sqrt(2 * 42/9)
    assert M.pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(3 / math.sqrt(2 * 42 / 9))
    # ranks with a tie: x -> (1, 2.5, 2.5, 4), y -> (1, 3, 2, 4): 4.5 / sqrt(4.5 * 5)
    assert M.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert M.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    out = M.regression_metrics([1, 2, 3], [1, 2, 4])
    assert list(out) == ["pearson", "spearman", "corr"]  # the main metric first
    assert out["spearman"] == pytest.approx(1.0)
    assert out["corr"] == pytest.approx((out["pearson"] + 1.0) / 2)


def test_normalize_answer_official_rules():
    assert M.normalize_answer("The  Café, a b.c!") == "café bc"
    assert M.normalize_answer("An apple\tand THE pear") == "apple and pear"
    assert M.normalize_answer("theater") == "theater"  # articles only as whole words


def test_squad_v1_scores():
    assert M.exact_match("the Eiffel Tower!", "Eiffel tower") == 1.0
    # pred "eiffel", gold "eiffel tower": precision 1, recall 1/2 -> 2/3
    assert M.f1_v1("Eiffel", "Eiffel Tower") == pytest.approx(2 / 3)
    assert M.f1_v1("", "") == 0.0  # v1.1 gives nothing for empty strings
    dataset = [{"paragraphs": [{"context": "x", "qas": [
        {"id": "a", "answers": [{"text": "Eiffel Tower"}, {"text": "the tower"}]},
        {"id": "b", "answers": [{"text": "Paris"}]},
        {"id": "c", "answers": [{"text": "1889"}]}]}]}]
    out = M.squad_v1_evaluate(dataset, {"a": "tower", "b": "in Paris"})
    # a: EM 1 (max over golds, "the tower" -> "tower"), F1 1; b: EM 0, F1 2*(1/2*1)/(1.5) = 2/3;
    # c: unanswered -> 0. Averages over 3 questions, in percent.
    assert out["exact_match"] == pytest.approx(100 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert out["missing"] == 1 and out["total"] == 3


def test_squad_v2_scores_and_breakdown():
    assert M.f1_v2("", "") == 1.0 and M.f1_v2("x", "") == 0.0 and M.f1_v2("", "x") == 0.0
    dataset = [{"paragraphs": [{"context": "x", "qas": [
        {"id": "h1", "answers": [{"text": "red car"}]},
        {"id": "h2", "answers": [{"text": "blue"}]},
        {"id": "n1", "answers": []},
        {"id": "n2", "answers": [{"text": "the"}]}]}]}]  # gold normalises to "" -> no-answer question
    preds = {"h1": "a red car", "h2": "", "n1": "", "n2": "something"}
    out = M.squad_v2_evaluate(dataset, preds)
    # exact: h1 1, h2 0, n1 1, n2 0 -> 50%; f1 the same here
    assert out["exact"] == pytest.approx(50.0) and out["f1"] == pytest.approx(50.0)
    assert out["HasAns_total"] == 2 and out["NoAns_total"] == 2
    assert out["HasAns_exact"] == pytest.approx(50.0) and out["NoAns_exact"] == pytest.approx(50.0)
    # With no-answer scores and threshold 0.5: n2 (0.9) becomes "" -> correct; h1 keeps its answer.
    probs = {"h1": 0.1, "h2": 0.6, "n1": 0.7, "n2": 0.9}
    out = M.squad_v2_evaluate(dataset, preds, probs, na_prob_thresh=0.5)
    assert out["exact"] == pytest.approx(75.0)
    # best threshold sweep over raw scores: start at 2 (no-answer count), h1 +1 -> 3 at 0.1,
    # h2 +0 (wrong), n1 +0 (already empty), n2 -1 -> best 3/4 at threshold 0.1
    assert out["best_exact"] == pytest.approx(75.0) and out["best_exact_thresh"] == pytest.approx(0.1)
    # missing predictions are skipped, as in the official v2.0 script
    assert M.squad_v2_evaluate(dataset, {"h1": "red car"})["total"] == 1
