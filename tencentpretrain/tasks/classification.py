"""Sentence and sentence-pair classification and regression (GLUE-style TSV tasks)."""
import torch
import torch.nn.functional as F

from tencentpretrain.tasks import metrics as M
from tencentpretrain.tasks.engine import forward_all, pad


def truncate_pair(a, b, max_tokens):
    """Drop tokens from the end of the longer sequence until both fit (longest first)."""
    while len(a) + len(b) > max_tokens:
        (a if len(a) > len(b) else b).pop()


def encode(examples, tokenizer, seq_length, regression=False):
    """`[CLS] a [SEP] (b [SEP])` with segments 1/2, padded to the longest row; labels when present."""
    srcs, segs = [], []
    for ex in examples:
        a = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(ex.text_a))
        if ex.text_b is None:
            a = a[:seq_length - 2]
            b = []
        else:
            b = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(ex.text_b))
            truncate_pair(a, b, seq_length - 3)
        src = [tokenizer.cls_id] + a + [tokenizer.sep_id]
        seg = [1] * len(src)
        if ex.text_b is not None:
            src += b + [tokenizer.sep_id]
            seg += [2] * (len(b) + 1)
        srcs.append(src)
        segs.append(seg)
    width = max(len(s) for s in srcs)
    tensors = {"src": pad(srcs, width, tokenizer.pad_id), "seg": pad(segs, width, 0)}
    if all(ex.label is not None for ex in examples):
        tensors["label"] = torch.tensor([ex.label for ex in examples],
                                        dtype=torch.float32 if regression else torch.long)
    return tensors


class SequenceTask:
    """Loss and dev metrics for a Classifier head; regression when the head has one output."""

    def __init__(self, regression=False, metric=None):
        self.regression = regression
        self.metric = metric or ("pearson" if regression else "acc")

    def loss(self, model, batch):
        logits = model(batch["src"], batch["seg"]).float()
        if self.regression:
            return F.mse_loss(logits.squeeze(-1), batch["label"])
        return F.cross_entropy(logits, batch["label"])

    def predict(self, model, tensors, run):
        """(predictions, logits): class ids (or scores for regression) and raw outputs."""
        (logits,) = forward_all(model, tensors, run)
        preds = logits.squeeze(-1) if self.regression else logits.argmax(-1)
        return preds, logits

    def evaluate(self, model, tensors, run):
        preds, _ = self.predict(model, tensors, run)
        labels = tensors["label"]
        if self.regression:
            return M.regression_metrics(preds.tolist(), labels.tolist(), self.metric)
        return M.classification_metrics(preds.tolist(), labels.tolist(), self.metric)
