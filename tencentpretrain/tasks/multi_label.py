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
from tencentpretrain.tasks import cli
from tencentpretrain.tasks import metrics as M
from tencentpretrain.tasks.classification import encode as encode_text
from tencentpretrain.tasks.engine import evaluate, fit, forward_all, set_seed
from tencentpretrain.tasks.readers import read_multi_label_tsv
from tencentpretrain.utils.io import atomic_write


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


class MultiLabelTask:
    """Binary cross-entropy per label; predictions are the labels with sigmoid > 0.5."""

    def __init__(self, metric="acc"):
        self.metric = metric

    def loss(self, model, batch):
        return F.binary_cross_entropy_with_logits(model(batch["src"], batch["seg"]).float(), batch["label"])

    def predict(self, model, tensors, run):
        """(0/1 predictions [N, labels], probabilities, logits)."""
        (logits,) = forward_all(model, tensors, run)
        probs = torch.sigmoid(logits)
        return (probs > 0.5).long(), probs, logits

    def evaluate(self, model, tensors, run):
        preds, _, _ = self.predict(model, tensors, run)
        return M.multi_label_metrics(preds.numpy(), tensors["label"].numpy(), self.metric)


def multi_label_main(argv=None):
    parser = cli._parser("Fine-tune a multi-label classifier on TSV files (label: comma-separated ids, "
                         "text_a[, text_b]).")
    cli._train_opts(parser, seq_length=128)
    parser.add_argument("--metric", choices=M.MULTI_LABEL_METRICS, default="acc",
                        help="dev metric that picks the best epoch (acc: the whole label set is right)")
    cli._pooling_opt(parser)
    args = parser.parse_args(argv)
    run = cli._run_config(args)
    set_seed(run.seed)  # before the head is initialised: same --seed, same model
    tokenizer = cli._tokenizer(args)
    train = read_multi_label_tsv(args.train_path)
    devs = [(p, read_multi_label_tsv(p)) for p in args.dev_path or []]
    test = read_multi_label_tsv(args.test_path) if args.test_path else None
    labels_num = getattr(args, "labels_num", None) or 1 + max(ex.label[-1] for ex in train)
    if labels_num < 1:
        raise UserError(f"--labels_num must be at least 1, got {labels_num}")
    for path, examples in [(args.train_path, train), *devs] + ([(args.test_path, test)] if test else []):
        check_label_ids(examples, labels_num, path)
    cli._log(f"{labels_num} labels")
    cfg = cli._model_config(args, tokenizer)
    cfg.labels_num = labels_num
    cli._log(f"pooling: {cfg.pooling}")
    from tencentpretrain.tasks.heads import build_task_model
    model = build_task_model(cfg, "classifier", labels_num, args.pretrained_model_path, log=cli._log)
    cli._save_config_beside(cfg, args)
    task = MultiLabelTask(args.metric)
    dev_sets = [(cli._name(p), encode(ex, tokenizer, args.seq_length, labels_num)) for p, ex in devs]
    result = fit(model, task, encode(train, tokenizer, args.seq_length, labels_num), dev_sets, run,
                 args.output_model_path, log=cli._log)
    if test is not None:
        metrics = evaluate(model, task, encode(test, tokenizer, args.seq_length, labels_num), run)
        cli._log(f"test ({args.test_path}): " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        result["test"] = metrics
    return 0


def multi_label_infer_main(argv=None):
    parser = cli._infer_parser("Predict label sets for a TSV file with a model from "
                               "finetune/run_classifier_multi_label.py; writes comma-separated label ids.")
    parser.add_argument("--output_logits", action="store_true", help="add a 'logits' column")
    parser.add_argument("--output_prob", action="store_true", help="add a 'prob' column (sigmoid per label)")
    args = parser.parse_args(argv)
    run = cli._run_config(args)
    tokenizer = cli._tokenizer(args)
    cfg = cli._infer_config(args, tokenizer)
    cli._use_recorded_pooling(args, cfg)
    model = cli._load_finetuned(args, cfg, "classifier").to(run.device)
    examples = read_multi_label_tsv(args.test_path, require_label=False)
    check_label_ids(examples, model.labels_num, args.test_path)
    tensors = encode(examples, tokenizer, args.seq_length, model.labels_num)
    task = MultiLabelTask()
    preds, probs, logits = task.predict(model, tensors, run)
    header = ["label"] + (["logits"] if args.output_logits else []) + (["prob"] if args.output_prob else [])
    with atomic_write(args.prediction_path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(header) + "\n")
        for i, row in enumerate(preds.tolist()):
            out = [",".join(str(j) for j, on in enumerate(row) if on)]
            if args.output_logits:
                out.append(" ".join(f"{x:.6g}" for x in logits[i].tolist()))
            if args.output_prob:
                out.append(" ".join(f"{x:.6g}" for x in probs[i].tolist()))
            f.write("\t".join(out) + "\n")
    note = ""
    if "label" in tensors:
        scores = M.multi_label_metrics(preds.numpy(), tensors["label"].numpy())
        note = " (" + " ".join(f"{k} {v:.4f}" for k, v in scores.items()) + " against the file's labels)"
    cli._log(f"{len(examples)} predictions written to {args.prediction_path}{note}")
    return 0
