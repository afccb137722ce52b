"""Task metrics, computed the way GLUE and SQuAD report them.

Everything here is plain Python/numpy on lists, so it is easy to check by hand.
Classification metrics return fractions in [0, 1]; SQuAD metrics return percentages,
as the official evaluation scripts print them.
"""
import collections
import re
import string

import numpy as np


# ---------------------------------------------------------------- classification / regression
def accuracy(preds, labels):
    preds, labels = np.asarray(preds), np.asarray(labels)
    return float((preds == labels).mean()) if len(labels) else 0.0


def f1_binary(preds, labels, positive=1):
    """F1 of the positive class (GLUE's MRPC and QQP F1)."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    tp = int(((preds == positive) & (labels == positive)).sum())
    fp = int(((preds == positive) & (labels != positive)).sum())
    fn = int(((preds != positive) & (labels == positive)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews_corr(preds, labels):
    """Matthews correlation coefficient (CoLA); the multi-class form equals the binary one for 2 classes."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    classes = np.union1d(preds, labels)
    conf = np.array([[np.sum((labels == t) & (preds == p)) for p in classes] for t in classes], dtype=np.float64)
    n, correct = conf.sum(), np.trace(conf)
    t_sum, p_sum = conf.sum(axis=1), conf.sum(axis=0)
    cov_tp = correct * n - t_sum @ p_sum
    denom = np.sqrt((n * n - p_sum @ p_sum) * (n * n - t_sum @ t_sum))
    return float(cov_tp / denom) if denom else 0.0  # sklearn's convention for a constant predictor


def pearson(x, y):
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc @ xc) * (yc @ yc))
    return float(xc @ yc / denom) if denom else 0.0


def _ranks(x):
    """1-based ranks; ties get the average of the ranks they span (as scipy.stats.rankdata)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and x[order[j + 1]] == x[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x, y):
    return pearson(_ranks(x), _ranks(y))


# Each metric set names its headline metric first: that is the one best-on-dev selection uses.
def classification_metrics(preds, labels, metric="acc"):
    out = {"acc": accuracy(preds, labels)}
    if metric in ("f1", "acc_and_f1"):
        out["f1"] = f1_binary(preds, labels)
        out["acc_and_f1"] = (out["acc"] + out["f1"]) / 2
    if metric == "mcc":
        out["mcc"] = matthews_corr(preds, labels)
    return {metric: out[metric], **out}


def regression_metrics(preds, labels, metric="pearson"):
    out = {"pearson": pearson(preds, labels), "spearman": spearman(preds, labels)}
    out["corr"] = (out["pearson"] + out["spearman"]) / 2
    return {metric: out[metric], **out}


CLASSIFICATION_METRICS = ("acc", "f1", "acc_and_f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman", "corr")


# ---------------------------------------------------------------- SQuAD (official v1.1 / v2.0 scripts)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace (official scripts)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction, ground_truth):
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_v1(prediction, ground_truth):
    """v1.1 token F1: an empty prediction or gold scores 0."""
    pred_toks, gold_toks = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    same = sum((collections.Counter(pred_toks) & collections.Counter(gold_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def f1_v2(prediction, ground_truth):
    """v2.0 token F1: if either side is empty, 1 when both are, else 0."""
    pred_toks, gold_toks = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    if not pred_toks or not gold_toks:
        return float(pred_toks == gold_toks)
    return f1_v1(prediction, ground_truth)


def _questions(dataset):
    for article in dataset:
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]


def squad_v1_evaluate(dataset, predictions):
    """Official v1.1: EM and F1 (percent), max over gold answers; an unanswered question scores 0."""
    em = f1 = total = 0
    missing = 0
    for qa in _questions(dataset):
        total += 1
        if qa["id"] not in predictions:
            missing += 1
            continue
        golds = [a["text"] for a in qa["answers"]]
        pred = predictions[qa["id"]]
        em += max(exact_match(pred, g) for g in golds)
        f1 += max(f1_v1(pred, g) for g in golds)
    return {"exact_match": 100.0 * em / total if total else 0.0,
            "f1": 100.0 * f1 / total if total else 0.0, "total": total, "missing": missing}


def squad_v2_evaluate(dataset, predictions, na_probs=None, na_prob_thresh=1.0):
    """Official v2.0: EM/F1 overall and split into HasAns / NoAns (percent).

    Gold answers that normalise to nothing are dropped; a question left with none expects the
    empty prediction. As in the official script, questions without a prediction are skipped.
    `na_probs` (qid -> no-answer score), when given, turns predictions into "" above the threshold
    and adds the best threshold for EM and F1.
    """
    exact, f1, has_ans = {}, {}, {}
    for qa in _questions(dataset):
        qid = qa["id"]
        golds = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])] or [""]
        has_ans[qid] = golds != [""]
        if qid not in predictions:
            continue
        pred = predictions[qid]
        exact[qid] = max(exact_match(pred, g) for g in golds)
        f1[qid] = max(f1_v2(pred, g) for g in golds)
    raw = {"exact": dict(exact), "f1": dict(f1)}
    if na_probs is not None:
        for scores in (exact, f1):
            for qid in scores:
                if na_probs[qid] > na_prob_thresh:
                    scores[qid] = float(not has_ans[qid])

    def summary(qids, prefix=""):
        n = len(qids)
        return {f"{prefix}exact": 100.0 * sum(exact[q] for q in qids) / n if n else 0.0,
                f"{prefix}f1": 100.0 * sum(f1[q] for q in qids) / n if n else 0.0,
                f"{prefix}total": n}

    scored = list(exact)
    out = summary(scored)
    out.update(summary([q for q in scored if has_ans[q]], "HasAns_"))
    out.update(summary([q for q in scored if not has_ans[q]], "NoAns_"))
    if na_probs is not None:
        for name, scores in raw.items():
            best, thresh = _best_threshold(predictions, scores, na_probs, has_ans)
            out[f"best_{name}"], out[f"best_{name}_thresh"] = best, thresh
    return out


def _best_threshold(predictions, scores, na_probs, has_ans):
    """Official find_best_thresh: sweep the no-answer score over the questions, best total score."""
    cur = best = sum(1 for q in has_ans if not has_ans[q])
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda q: na_probs[q]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if predictions[qid] else 0
        cur += diff
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / len(scores) if scores else 0.0, best_thresh


# ---------------------------------------------------------------- NER (span level) and multi-label
def bio_entities(tags):
    """Entities of one tag sequence, decoded as TencentPretrain's run_ner.py decodes them.

    An entity starts at a tag beginning with "B" and runs on until the next "O", "[PAD]", tag
    beginning with "B", or the end. Returned as (start, end, tags) with `end` inclusive and `tags`
    the tuple of tags it covers, so two entities match only if they have the same span and every
    tag agrees (B-PER I-LOC is one entity and it matches only B-PER I-LOC). An "I-" tag with no
    "B" before it (after "O" or at the start) belongs to no entity.
    """
    entities = set()
    for start, tag in enumerate(tags):
        if not tag.startswith("B"):
            continue
        end = start
        while end + 1 < len(tags) and tags[end + 1] not in ("O", "[PAD]") and not tags[end + 1].startswith("B"):
            end += 1
        entities.add((start, end, tuple(tags[start:end + 1])))
    return entities


def span_f1(gold_seqs, pred_seqs):
    """Micro precision / recall / F1 over exactly matching entities (see `bio_entities`).

    gold_seqs, pred_seqs: one tag sequence per sentence, of equal lengths. F1 comes first
    (it picks the best epoch); 0.0 where a ratio has nothing to count.
    """
    if len(gold_seqs) != len(pred_seqs):
        raise ValueError(f"{len(gold_seqs)} gold sentences but {len(pred_seqs)} predicted")
    correct = gold_n = pred_n = 0
    for i, (gold, pred) in enumerate(zip(gold_seqs, pred_seqs)):
        if len(gold) != len(pred):
            raise ValueError(f"sentence {i}: {len(gold)} gold tags but {len(pred)} predicted")
        g, p = bio_entities(gold), bio_entities(pred)
        correct, gold_n, pred_n = correct + len(g & p), gold_n + len(g), pred_n + len(p)
    precision = correct / pred_n if pred_n else 0.0
    recall = correct / gold_n if gold_n else 0.0
    f1 = 2 * precision * recall / (precision + recall) if correct else 0.0
    return {"f1": f1, "precision": precision, "recall": recall,
            "gold_entities": gold_n, "pred_entities": pred_n, "correct": correct}


def multi_label_metrics(preds, labels, metric="acc"):
    """Multi-label scores from 0/1 matrices [examples, labels].

    acc: the whole label set is right (TencentPretrain's run_classifier_multi_label.py metric);
    micro_f1: F1 over all (example, label) decisions; macro_f1: mean per-label F1 over the labels
    that occur in the gold or predicted sets. The chosen `metric` comes first.
    """
    preds, labels = np.asarray(preds, dtype=bool), np.asarray(labels, dtype=bool)
    if preds.shape != labels.shape:
        raise ValueError(f"predictions {preds.shape} and labels {labels.shape} differ in shape")
    tp = (preds & labels).sum(0)
    fp = (preds & ~labels).sum(0)
    fn = (~preds & labels).sum(0)
    seen = (tp + fp + fn) > 0
    per_label = 2 * tp[seen] / (2 * tp[seen] + fp[seen] + fn[seen])
    micro_tp, micro_rest = int(tp.sum()), int(fp.sum() + fn.sum())
    out = {"acc": float((preds == labels).all(1).mean()) if len(labels) else 0.0,
           "micro_f1": 2 * micro_tp / (2 * micro_tp + micro_rest) if micro_tp else 0.0,
           "macro_f1": float(per_label.mean()) if seen.any() else 0.0}
    return {metric: out[metric], **out}


MULTI_LABEL_METRICS = ("acc", "micro_f1", "macro_f1")
