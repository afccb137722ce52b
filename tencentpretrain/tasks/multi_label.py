"""Multi-label classification, TencentPretrain's run_classifier_multi_label.py and its _infer script.

Data: the classifier's TSV (`label`, `text_a`, optional `text_b`) where `label` lists the example's
class ids separated by commas (`0,3`). The model is the classifier (same keys, same --pooling) with
one independent sigmoid per label: trained with binary cross-entropy, a label is predicted when
its probability is above 0.5. The dev metric is TencentPretrain's: the fraction of examples whose
whole label set is right (`acc`); micro and macro F1 are reported beside it.
"""
import dataclasses

import torch
import torch.nn.functional as F

from tencentpretrain.errors import UserError
from tencentpretrain.tasks import metrics as M
from tencentpretrain.tasks.base import register_task
from tencentpretrain.tasks.classification import SentenceTask, add_output_opts, write_label_table
from tencentpretrain.tasks.classification import encode as encode_text
from tencentpretrain.tasks.cli import finetune_main, infer_main
from tencentpretrain.tasks.engine import forward_all
from tencentpretrain.tasks.readers import read_multi_label_tsv


def encode(examples, tokenizer, seq_length, labels_num):
    """The classifier's encoding plus, when every example has labels, a multi-hot float `label`."""
    tensors = encode_text([dataclasses.replace(ex, label=None) for ex in examples], tokenizer, seq_length)
    if all(ex.label is not None for ex in examples):
        target = torch.zeros(len(examples), labels_num)
        for i, ex in enumerate(examples):
            target[i, list(ex.label)] = 1.0
        tensors["label"] = target
    return tensors


def check_label_ids(examples, labels_num, path):
    for ex in examples:
        if ex.label is not None and ex.label[-1] >= labels_num:
            raise UserError(f"{path}, line {ex.line}: label {ex.label[-1]} is out of range for {labels_num} "
                            f"labels (0..{labels_num - 1}); pass --labels_num or fix the file")


@register_task("multi_label")
class MultiLabelTask(SentenceTask):
    """Binary cross-entropy per label; predictions are the labels with sigmoid > 0.5."""

    train_description = ("Fine-tune a multi-label classifier on TSV files (label: comma-separated ids, "
                         "text_a[, text_b]).")
    infer_description = ("Predict label sets for a TSV file with a model from "
                         "finetune/run_classifier_multi_label.py; writes comma-separated label ids.")

    def __init__(self, metric="acc"):
        self.metric = metric

    @classmethod
    def add_options(cls, parser, training):
        if training:
            parser.add_argument("--metric", choices=M.MULTI_LABEL_METRICS, default="acc",
                                help="dev metric that picks the best epoch (acc: the whole label set is right)")
        super().add_options(parser, training)
        if not training:
            add_output_opts(parser, prob="sigmoid per label")

    @classmethod
    def from_args(cls, args, log=print):
        return cls(getattr(args, "metric", "acc")).bind(args, log)

    def read(self, path, labelled=True):
        examples = read_multi_label_tsv(path, require_label=labelled)
        if not labelled:  # inference: the head is loaded, its label count known
            self.check_labels(examples, self.labels_num, path)
        return examples

    @staticmethod
    def labels_of(ex):
        return list(ex.label or ())

    def labels_in(self, examples, path):
        return 1 + max(ex.label[-1] for ex in examples)

    def check_labels(self, examples, labels_num, path):
        check_label_ids(examples, labels_num, path)

    def encode(self, examples, tokenizer, seq_length, path, training=False):
        return self.warn_textless(examples, encode(examples, tokenizer, seq_length, self.labels_num), path)

    def loss(self, model, batch):
        return F.binary_cross_entropy_with_logits(model(batch["src"], batch["seg"]).float(), batch["label"])

    def predict(self, model, tensors, run):
        """(0/1 predictions [N, labels], probabilities, logits)."""
        (logits,) = forward_all(model, tensors, run)
        probs = torch.sigmoid(logits)
        return (probs > 0.5).long(), probs, logits

    def metrics(self, tensors, preds):
        return M.multi_label_metrics(preds.numpy(), tensors["label"].numpy(), self.metric)

    def evaluate(self, model, tensors, run):
        preds, _, _ = self.predict(model, tensors, run)
        return self.metrics(tensors, preds)

    def write_predictions(self, tensors, predictions):
        preds, probs, logits = predictions
        labels = [",".join(str(j) for j, on in enumerate(row) if on) for row in preds.tolist()]
        write_label_table(self.args, labels, logits, probs)
        return f"{len(preds)} predictions written to {self.args.prediction_path}{self._note(tensors, preds)}"


def multi_label_main(argv=None):
    return finetune_main(MultiLabelTask, argv)


def multi_label_infer_main(argv=None):
    return infer_main(MultiLabelTask, argv)
