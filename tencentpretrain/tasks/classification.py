"""Sentence and sentence-pair classification and regression (GLUE-style TSV tasks).

Both use the Classifier head (tasks/heads.py): a pooled sentence vector -> labels_num outputs, one
output for regression. SentenceTask holds what every task on that head shares (multi-label too):
--pooling, recorded beside the fine-tuned model so that inference pools the same way, and the label
count, read from the data for fine-tuning and from the head's weights for inference.
"""
import argparse
import os

import torch
import torch.nn.functional as F

from tencentpretrain.errors import UserError
from tencentpretrain.tasks import metrics as M
from tencentpretrain.tasks.base import Task, register_task
from tencentpretrain.tasks.cli import config_beside, finetune_main, infer_main
from tencentpretrain.tasks.engine import format_metrics, forward_all, pad
from tencentpretrain.tasks.heads import POOLINGS, Classifier
from tencentpretrain.tasks.readers import (check_labels, example_labels, infer_labels_num, label_warning,
                                          read_tsv)
from tencentpretrain.utils.io import atomic_write


def truncate_pair(a, b, max_tokens):
    """Drop tokens from the end of the longer sequence until both fit (longest first)."""
    while len(a) + len(b) > max_tokens:
        (a if len(a) > len(b) else b).pop()


def special_tokens(examples):
    """[CLS] and [SEP] around a sentence, one [SEP] more when any example has a text_b."""
    return 3 if any(ex.text_b is not None for ex in examples) else 2


def encode(examples, tokenizer, seq_length, regression=False):
    """`[CLS] a [SEP] (b [SEP])` with segments 1/2, padded to the longest row; labels when present."""
    specials = special_tokens(examples)
    if seq_length <= specials:
        raise UserError(f"--seq_length {seq_length} leaves no room for text after the {specials} special tokens "
                        f"([CLS] and [SEP]{' twice' if specials == 3 else ''}); use at least {specials + 1}")
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


def textless_warning(examples, tensors, path):
    """A `warning: ...` line counting the examples encoded without a single text token, or None."""
    lengths = (tensors["seg"] > 0).sum(1).tolist()
    empty = [ex.line for ex, n in zip(examples, lengths) if n <= 2 + (ex.text_b is not None)]
    if not empty:
        return None
    shown = ", ".join(str(n) for n in empty[:5]) + (", ..." if len(empty) > 5 else "")
    return (f"warning: {path}: {len(empty)} of {len(examples)} examples (lines {shown}) have no text tokens (empty "
            "or blank text); the model sees only [CLS] and [SEP] for them")


class SentenceTask(Task):
    """A task on the Classifier head; subclasses say how labels are read, counted and scored."""

    labels_num = None

    def metrics(self, tensors, preds):
        """The task's scores of `preds` against `tensors["label"]`."""
        raise NotImplementedError

    def _note(self, tensors, preds):
        """How the predictions score against the file's own labels, if it has them."""
        if "label" not in tensors:
            return ""
        return f" ({format_metrics(self.metrics(tensors, preds))} against the file's labels)"

    labels_of = staticmethod(example_labels)  # an example's labels as a list (multi-label: several)

    @classmethod
    def add_options(cls, parser, training):
        parser.add_argument("--pooling", choices=POOLINGS, default=argparse.SUPPRESS,
                            help="sentence vector for the head: first ([CLS]), mean / max over the non-padding "
                                 "tokens, or last (the last non-padding token); default: the config's, else first. "
                                 "Recorded in the model config written beside the fine-tuned model")

    def labels_in(self, examples, path):
        """The number of labels the training examples imply."""
        raise NotImplementedError

    def check_labels(self, examples, labels_num, path):
        """Every label of `examples` must fit a head with labels_num outputs."""
        raise NotImplementedError

    def count_labels(self, splits):
        """The number of outputs of the head, from --labels_num or the training file; checks every file."""
        (train_path, train), *_ = splits
        labels_num = getattr(self.args, "labels_num", None) or self.labels_in(train, train_path)
        if labels_num < 1:
            raise UserError(f"--labels_num must be at least 1, got {labels_num}")
        for path, examples in splits:
            self.check_labels(examples, labels_num, path)
        self.log(f"{labels_num} labels")
        seen = {label for ex in train for label in self.labels_of(ex)}
        unused = sorted(set(range(labels_num)) - seen)
        if unused:
            self.log(f"warning: {train_path}: no training example has label {', '.join(map(str, unused[:8]))} "
                     f"(of 0..{labels_num - 1}); the model will not learn to predict it")
        for path, examples in splits[1:]:
            note = label_warning(examples, path, seen, f"labels never seen in training ({train_path})",
                                 "the model will rarely if ever predict them", self.labels_of)
            if note:
                self.log(note)
        return labels_num

    def warn_textless(self, examples, tensors, path):
        """Print a warning when some examples were encoded without any text token; returns `tensors`."""
        note = textless_warning(examples, tensors, path)
        if note:
            self.log(note)
        return tensors

    def prepare(self, cfg, splits):
        self.labels_num = cfg.labels_num = self.count_labels(splits)
        self.log(f"pooling: {cfg.pooling}")

    def build_model(self, cfg):
        return Classifier(cfg, self.labels_num)

    def load_model(self, cfg, args):
        _use_recorded_pooling(args, cfg, self.log)
        return super().load_model(cfg, args)

    def model_from_checkpoint(self, cfg, state_dict, args):
        """A Classifier with as many labels as the checkpoint's head has rows."""
        if "output_layer_2.weight" not in state_dict:
            raise UserError(f"{args.load_model_path} has no classifier head (output_layer_2.*); pass a model "
                            "written by finetune/run_classifier.py or run_regression.py")
        self.labels_num = state_dict["output_layer_2.weight"].shape[0]
        _check_labels_num(args, cfg, self.labels_num)
        return Classifier(cfg, self.labels_num)


class SequenceTask(SentenceTask):
    """Classification (cross-entropy, class ids) or regression (one output, mean squared error)."""

    def __init__(self, regression=False, metric=None):
        self.regression = regression
        self.metric = metric or ("pearson" if regression else "acc")

    @classmethod
    def from_args(cls, args, log=print):
        return cls(metric=getattr(args, "metric", None)).bind(args, log)

    def read(self, path, labelled=True):
        examples = read_tsv(path, "regression" if self.regression else "classification", require_label=labelled)
        if not labelled and not self.regression and self.labels_num:  # inference: the head is known
            note = label_warning(examples, path, range(self.labels_num),
                                 f"labels the model cannot produce (its head has {self.labels_num})",
                                 "they count as errors in the score against the file's labels")
            if note:
                self.log(note)
        return examples

    def count_labels(self, splits):
        return 1 if self.regression else super().count_labels(splits)

    def labels_in(self, examples, path):
        return infer_labels_num(examples, path)

    def check_labels(self, examples, labels_num, path):
        check_labels(examples, labels_num, path)

    def encode(self, examples, tokenizer, seq_length, path, training=False):
        return self.warn_textless(examples, encode(examples, tokenizer, seq_length, self.regression), path)

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

    def metrics(self, tensors, preds):
        labels = tensors["label"]
        if self.regression:
            return M.regression_metrics(preds.tolist(), labels.tolist(), self.metric)
        return M.classification_metrics(preds.tolist(), labels.tolist(), self.metric)

    def evaluate(self, model, tensors, run):
        preds, _ = self.predict(model, tensors, run)
        return self.metrics(tensors, preds)


@register_task("classification")
class ClassificationTask(SequenceTask):
    train_description = "Fine-tune a classification model on TSV files (label, text_a[, text_b])."
    infer_description = "Predict labels (or scores) for a TSV file with a fine-tuned classifier/regression model."

    def __init__(self, metric=None):
        super().__init__(False, metric)

    @classmethod
    def add_options(cls, parser, training):
        _metric_opt(parser, training, M.CLASSIFICATION_METRICS)
        super().add_options(parser, training)
        if not training:
            add_output_opts(parser, prob="softmax")

    def model_from_checkpoint(self, cfg, state_dict, args):
        model = super().model_from_checkpoint(cfg, state_dict, args)
        if self.labels_num == 1:  # a regression model predicts here too
            self.regression, self.metric = True, "pearson"
        return model

    def write_predictions(self, tensors, predictions):
        preds, logits = predictions
        labels = [f"{pred:.6g}" if self.regression else str(pred) for pred in preds.tolist()]
        write_label_table(self.args, labels, logits, logits.softmax(-1))
        return f"{len(preds)} predictions written to {self.args.prediction_path}{self._note(tensors, preds)}"


@register_task("regression")
class RegressionTask(SequenceTask):
    train_description = "Fine-tune a regression model on TSV files (label, text_a[, text_b])."
    infer_description = "Predict scores for a TSV file with a model from finetune/run_regression.py."

    def __init__(self, metric=None):
        super().__init__(True, metric)

    @classmethod
    def add_options(cls, parser, training):
        _metric_opt(parser, training, M.REGRESSION_METRICS)
        super().add_options(parser, training)

    def model_from_checkpoint(self, cfg, state_dict, args):
        model = super().model_from_checkpoint(cfg, state_dict, args)
        if self.labels_num != 1:
            raise UserError(f"{args.load_model_path} is a classifier with {self.labels_num} labels, not a "
                            "regression model (one output); use inference/run_classifier_infer.py")
        return model

    def write_predictions(self, tensors, predictions):
        """TencentPretrain's output: a 'label' header, then one score per line at full float32 precision."""
        preds, _ = predictions
        with atomic_write(self.args.prediction_path, "w", encoding="utf-8", newline="\n") as f:
            f.write("label\n")
            for score in preds.tolist():
                f.write(f"{score!r}\n")
        return f"{len(preds)} predictions written to {self.args.prediction_path}{self._note(tensors, preds)}"


def _metric_opt(parser, training, choices):
    if training:
        parser.add_argument("--metric", choices=choices, default=choices[0],
                            help="dev metric that picks the best epoch (CoLA: mcc, MRPC/QQP: f1, STS-B: pearson)")


def add_output_opts(parser, prob):
    """Inference's optional columns; `prob` says how the probabilities are made (softmax, sigmoid)."""
    parser.add_argument("--output_logits", action="store_true", help="add a 'logits' column")
    parser.add_argument("--output_prob", action="store_true", help=f"add a 'prob' column ({prob})")


def write_label_table(args, labels, logits, probs):
    """The prediction TSV of the classifier heads: `label`, then space-separated 'logits' and 'prob' on request."""
    header = ["label"] + (["logits"] if args.output_logits else []) + (["prob"] if args.output_prob else [])
    with atomic_write(args.prediction_path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(header) + "\n")
        for i, label in enumerate(labels):
            row = [label]
            if args.output_logits:
                row.append(" ".join(f"{x:.6g}" for x in logits[i].tolist()))
            if args.output_prob:
                row.append(" ".join(f"{x:.6g}" for x in probs[i].tolist()))
            f.write("\t".join(row) + "\n")


# ---------------------------------------------------------------- the head recorded beside the model
def _use_recorded_pooling(args, cfg, log):
    """Pool as in fine-tuning: the pooling recorded beside the model wins; asking for another is an error.

    A model without a record (fine-tuned by TencentPretrain, say) pools as --pooling or the
    config say, default first, as in TencentPretrain.
    """
    from tencentpretrain.config import read_config_file
    beside = config_beside(args.load_model_path)
    recorded = read_config_file(beside).get("pooling", "first") if os.path.isfile(beside) else None
    asked = None
    if "pooling" in vars(args):
        asked = (args.pooling, "--pooling")
    elif args.config_path and os.path.abspath(args.config_path) != os.path.abspath(beside):
        value = read_config_file(args.config_path).get("pooling")
        asked = (value, f"\"pooling\" in {args.config_path}") if value is not None else None
    if recorded is None:
        where = asked[1] if asked else "the default"
        log(f"pooling: {cfg.pooling} (from {where}; no {beside} records the fine-tuning pooling)")
        return
    if recorded not in POOLINGS:
        raise UserError(f"{beside}: key 'pooling' is '{recorded}'; choose one of: {', '.join(POOLINGS)}")
    if asked and asked[0] != recorded:
        raise UserError(f"{args.load_model_path} was fine-tuned with pooling '{recorded}' (recorded in {beside}), "
                        f"but {asked[1]} asks for '{asked[0]}'; drop it or pass --pooling {recorded}")
    cfg.pooling = recorded
    log(f"pooling: {recorded} (recorded in {beside})")


def _check_labels_num(args, cfg, labels_num):
    """--labels_num (or the config's labels_num) must match the head; omitted, the head decides."""
    if cfg.labels_num is None or cfg.labels_num == labels_num:
        return
    asked = "--labels_num" if "labels_num" in vars(args) else f"labels_num in {args.config_path}"
    raise UserError(f"{args.load_model_path} has {labels_num} labels (output_layer_2 has {labels_num} rows), "
                    f"but {asked} asks for {cfg.labels_num}; pass --labels_num {labels_num}, leave it out, "
                    f"or load a model fine-tuned with {cfg.labels_num} labels")


# ---------------------------------------------------------------- entry points (finetune/, inference/)
def classifier_main(argv=None):
    return finetune_main(ClassificationTask, argv)


def regression_main(argv=None):
    return finetune_main(RegressionTask, argv)


def classifier_infer_main(argv=None):
    return infer_main(ClassificationTask, argv)


def regression_infer_main(argv=None):
    return infer_main(RegressionTask, argv)
