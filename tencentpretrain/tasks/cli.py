"""Command lines of finetune/*.py and inference/*.py (the scripts only call these mains)."""
import argparse
import json
import os

from tencentpretrain.errors import UserError
from tencentpretrain.opts import model_config_from_args, model_opts, tokenizer_opts
from tencentpretrain.tasks import metrics as M
from tencentpretrain.tasks.engine import RunConfig, fit, pick_device, set_seed
from tencentpretrain.utils.io import atomic_write


# ---------------------------------------------------------------- options
def _parser(description):
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model_opts(parser)
    tokenizer_opts(parser)
    return parser


def _train_opts(parser, seq_length):
    g = parser.add_argument_group("fine-tuning")
    g.add_argument("--pretrained_model_path", default=None, help="pre-trained weights (.bin or .safetensors)")
    g.add_argument("--output_model_path", default="models/finetuned_model.bin",
                   help="where the best-on-dev weights are written")
    g.add_argument("--train_path", required=True)
    g.add_argument("--dev_path", nargs="+", default=None,
                   help="dev file(s); the first one picks the best epoch (MNLI: matched then mismatched)")
    g.add_argument("--test_path", default=None, help="labelled test file, scored once with the best model")
    g.add_argument("--epochs_num", type=int, default=3)
    g.add_argument("--batch_size", type=int, default=32)
    g.add_argument("--seq_length", type=int, default=seq_length)
    g.add_argument("--learning_rate", type=float, default=2e-5)
    g.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps with a rising learning rate")
    g.add_argument("--weight_decay", type=float, default=0.01)
    g.add_argument("--accumulation_steps", type=int, default=1, help="batches per optimizer step")
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--report_steps", type=int, default=100)
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    return g


def _infer_opts(parser, seq_length):
    g = parser.add_argument_group("inference")
    g.add_argument("--load_model_path", "--pretrained_model_path", dest="load_model_path", required=True,
                   help="fine-tuned weights")
    g.add_argument("--test_path", required=True)
    g.add_argument("--prediction_path", required=True)
    g.add_argument("--batch_size", type=int, default=64)
    g.add_argument("--seq_length", type=int, default=seq_length)
    g.add_argument("--bf16", action="store_true")
    g.add_argument("--device", default=None)
    return g


def _pooling_opt(parser):
    """TencentPretrain's --pooling; not given = the config's "pooling" (default first)."""
    from tencentpretrain.tasks.heads import POOLINGS
    parser.add_argument("--pooling", choices=POOLINGS, default=argparse.SUPPRESS,
                        help="sentence vector for the head: first ([CLS]), mean / max over the non-padding "
                             "tokens, or last (the last non-padding token); default: the config's, else first. "
                             "Recorded in the model config written beside the fine-tuned model")


def _check_run(args):
    for name in ("epochs_num", "batch_size", "seq_length", "report_steps", "accumulation_steps"):
        if getattr(args, name, 1) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not 0.0 <= getattr(args, "warmup", 0.0) <= 1.0:
        raise UserError(f"--warmup is a fraction of the steps in [0, 1], got {args.warmup}")


def _run_config(args):
    _check_run(args)
    return RunConfig(epochs_num=getattr(args, "epochs_num", 1), batch_size=args.batch_size,
                     learning_rate=getattr(args, "learning_rate", 0.0), warmup=getattr(args, "warmup", 0.0),
                     seed=getattr(args, "seed", 7), report_steps=getattr(args, "report_steps", 100),
                     accumulation_steps=getattr(args, "accumulation_steps", 1),
                     weight_decay=getattr(args, "weight_decay", 0.0), bf16=args.bf16,
                     device=pick_device(args.device))


def _tokenizer(args):
    from tencentpretrain.data.tokenizers import build_tokenizer
    from tencentpretrain.resources import resolve
    return build_tokenizer(args.tokenizer, vocab_path=resolve(args.vocab_path),
                           spm_model_path=resolve(args.spm_model_path), do_lower_case=args.do_lower_case)


def _model_config(args, tokenizer):
    from tencentpretrain.resources import resolve
    args.config_path = resolve(args.config_path)
    cfg = model_config_from_args(args, vocab_size=tokenizer.vocab_size)
    if args.seq_length > cfg.max_seq_length:
        raise UserError(f"--seq_length {args.seq_length} exceeds the model's max_seq_length {cfg.max_seq_length}")
    return cfg


def _log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- classification / regression
def _sequence_main(argv, regression):
    from tencentpretrain.tasks.classification import SequenceTask, encode
    from tencentpretrain.tasks.heads import build_task_model
    from tencentpretrain.tasks.readers import check_labels, infer_labels_num, read_tsv
    kind = "regression" if regression else "classification"
    parser = _parser(f"Fine-tune a {kind} model on TSV files (label, text_a[, text_b]).")
    _train_opts(parser, seq_length=128)
    choices = M.REGRESSION_METRICS if regression else M.CLASSIFICATION_METRICS
    parser.add_argument("--metric", choices=choices, default=choices[0],
                        help="dev metric that picks the best epoch (CoLA: mcc, MRPC/QQP: f1, STS-B: pearson)")
    _pooling_opt(parser)
    args = parser.parse_args(argv)
    run = _run_config(args)
    set_seed(run.seed)  # before the head is initialised: same --seed, same model
    tokenizer = _tokenizer(args)
    train = read_tsv(args.train_path, kind)
    devs = [(p, read_tsv(p, kind)) for p in args.dev_path or []]
    test = read_tsv(args.test_path, kind) if args.test_path else None
    if regression:
        labels_num = 1
    else:
        labels_num = getattr(args, "labels_num", None) or infer_labels_num(train, args.train_path)
        for path, examples in [(args.train_path, train), *devs] + ([(args.test_path, test)] if test else []):
            check_labels(examples, labels_num, path)
        _log(f"{labels_num} labels")
    cfg = _model_config(args, tokenizer)
    cfg.labels_num = labels_num
    _log(f"pooling: {cfg.pooling}")
    model = build_task_model(cfg, "classifier", labels_num, args.pretrained_model_path, log=_log)
    _save_config_beside(cfg, args)
    task = SequenceTask(regression, args.metric)
    dev_sets = [(_name(p), encode(ex, tokenizer, args.seq_length, regression)) for p, ex in devs]
    result = fit(model, task, encode(train, tokenizer, args.seq_length, regression), dev_sets, run,
                 args.output_model_path, log=_log)
    if test is not None:
        from tencentpretrain.tasks.engine import evaluate
        metrics = evaluate(model, task, encode(test, tokenizer, args.seq_length, regression), run)
        _log(f"test ({args.test_path}): " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        result["test"] = metrics
    return result


def _name(path):
    return os.path.splitext(os.path.basename(path))[0]


def classifier_main(argv=None):
    _sequence_main(argv, regression=False)
    return 0


def regression_main(argv=None):
    _sequence_main(argv, regression=True)
    return 0


# ---------------------------------------------------------------- the config beside a fine-tuned model
def config_beside(model_path):
    """`models/x.bin` -> `models/x_config.json`: where fine-tuning records the model config."""
    from tencentpretrain.config import config_path_beside
    return config_path_beside(model_path)


def _save_config_beside(cfg, args):
    """Record the config (pooling and labels_num included) so inference rebuilds the same model."""
    path = config_beside(args.output_model_path)
    if args.config_path and os.path.abspath(path) == os.path.abspath(args.config_path):
        raise UserError(f"--output_model_path {args.output_model_path} would overwrite --config_path {path} with "
                        "the fine-tuned model's config; choose another --output_model_path")
    cfg.save(path)
    _log(f"model config written to {path}")


def _infer_config(args, tokenizer):
    """The model config for inference: --config_path, else the one fine-tuning wrote beside the model."""
    beside = config_beside(args.load_model_path)
    if args.config_path is None and os.path.isfile(beside):
        args.config_path = beside
        _log(f"model config: {beside} (written beside the model by fine-tuning)")
    return _model_config(args, tokenizer)


def _use_recorded_pooling(args, cfg):
    """Pool as in fine-tuning: the pooling recorded beside the model wins; asking for another is an error.

    A model without a record (fine-tuned by TencentPretrain, say) pools as --pooling or the
    config say, default first, as in TencentPretrain.
    """
    from tencentpretrain.config import read_config_file
    from tencentpretrain.tasks.heads import POOLINGS
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
        _log(f"pooling: {cfg.pooling} (from {where}; no {beside} records the fine-tuning pooling)")
        return
    if recorded not in POOLINGS:
        raise UserError(f"{beside}: key 'pooling' is '{recorded}'; choose one of: {', '.join(POOLINGS)}")
    if asked and asked[0] != recorded:
        raise UserError(f"{args.load_model_path} was fine-tuned with pooling '{recorded}' (recorded in {beside}), "
                        f"but {asked[1]} asks for '{asked[0]}'; drop it or pass --pooling {recorded}")
    cfg.pooling = recorded
    _log(f"pooling: {recorded} (recorded in {beside})")


def _load_finetuned(args, cfg, head):
    """A task model from a fine-tuned checkpoint; the label count is read from the weights."""
    from tencentpretrain.model_io import load_model_weights, load_state_dict_file
    from tencentpretrain.tasks.heads import Classifier, SpanQA
    sd = load_state_dict_file(args.load_model_path)
    if head == "classifier":
        if "output_layer_2.weight" not in sd:
            raise UserError(f"{args.load_model_path} has no classifier head (output_layer_2.*); pass a model "
                            "written by finetune/run_classifier.py or run_regression.py")
        labels_num = sd["output_layer_2.weight"].shape[0]
        _check_labels_num(args, cfg, labels_num)
        model = Classifier(cfg, labels_num)
    else:
        if "output_layer.weight" not in sd:
            raise UserError(f"{args.load_model_path} has no span head (output_layer.*); pass a model "
                            "written by finetune/run_squad.py")
        model = SpanQA(cfg)
    load_model_weights(model, sd, where=args.load_model_path)
    return model


def _check_labels_num(args, cfg, labels_num):
    """--labels_num (or the config's labels_num) must match the head; omitted, the head decides."""
    if cfg.labels_num is None or cfg.labels_num == labels_num:
        return
    asked = "--labels_num" if "labels_num" in vars(args) else f"labels_num in {args.config_path}"
    raise UserError(f"{args.load_model_path} has {labels_num} labels (output_layer_2 has {labels_num} rows), "
                    f"but {asked} asks for {cfg.labels_num}; pass --labels_num {labels_num}, leave it out, "
                    f"or load a model fine-tuned with {cfg.labels_num} labels")


def _sequence_infer(args, regression_only=False):
    """Predictions for args.test_path: (examples, predictions, logits, note on the file's own labels)."""
    from tencentpretrain.tasks.classification import SequenceTask, encode
    from tencentpretrain.tasks.readers import read_tsv
    run = _run_config(args)
    tokenizer = _tokenizer(args)
    cfg = _infer_config(args, tokenizer)
    _use_recorded_pooling(args, cfg)
    model = _load_finetuned(args, cfg, "classifier").to(run.device)
    regression = model.labels_num == 1
    if regression_only and not regression:
        raise UserError(f"{args.load_model_path} is a classifier with {model.labels_num} labels, not a regression "
                        "model (one output); use inference/run_classifier_infer.py")
    examples = read_tsv(args.test_path, "regression" if regression else "classification", require_label=False)
    task = SequenceTask(regression)
    tensors = encode(examples, tokenizer, args.seq_length, regression)
    preds, logits = task.predict(model, tensors, run)
    note = ""
    if "label" in tensors:
        scores = task.evaluate(model, tensors, run)
        note = " (" + " ".join(f"{k} {v:.4f}" for k, v in scores.items()) + " against the file's labels)"
    return examples, preds, logits, note


def _infer_parser(description):
    parser = _parser(description)
    _infer_opts(parser, seq_length=128)
    _pooling_opt(parser)
    return parser


def classifier_infer_main(argv=None):
    parser = _infer_parser("Predict labels (or scores) for a TSV file with a fine-tuned classifier/regression model.")
    parser.add_argument("--output_logits", action="store_true", help="add a 'logits' column")
    parser.add_argument("--output_prob", action="store_true", help="add a 'prob' column (softmax)")
    args = parser.parse_args(argv)
    examples, preds, logits, note = _sequence_infer(args)
    regression = logits.shape[-1] == 1
    header = ["label"] + (["logits"] if args.output_logits else []) + (["prob"] if args.output_prob else [])
    probs = logits.softmax(-1)
    with atomic_write(args.prediction_path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(header) + "\n")
        for i, pred in enumerate(preds.tolist()):
            row = [f"{pred:.6g}" if regression else str(pred)]
            if args.output_logits:
                row.append(" ".join(f"{x:.6g}" for x in logits[i].tolist()))
            if args.output_prob:
                row.append(" ".join(f"{x:.6g}" for x in probs[i].tolist()))
            f.write("\t".join(row) + "\n")
    _log(f"{len(examples)} predictions written to {args.prediction_path}{note}")
    return 0


def regression_infer_main(argv=None):
    """TencentPretrain's output: a 'label' header, then one score per line at full float32 precision."""
    parser = _infer_parser("Predict scores for a TSV file with a model from finetune/run_regression.py.")
    args = parser.parse_args(argv)
    examples, preds, _, note = _sequence_infer(args, regression_only=True)
    with atomic_write(args.prediction_path, "w", encoding="utf-8", newline="\n") as f:
        f.write("label\n")
        for score in preds.tolist():
            f.write(f"{score!r}\n")
    _log(f"{len(examples)} predictions written to {args.prediction_path}{note}")
    return 0


# ---------------------------------------------------------------- SQuAD
def _squad_opts(parser):
    g = parser.add_argument_group("SQuAD")
    g.add_argument("--doc_stride", type=int, default=128, help="tokens between the starts of two context windows")
    g.add_argument("--max_query_length", type=int, default=64)
    g.add_argument("--max_answer_length", type=int, default=30)
    g.add_argument("--n_best_size", type=int, default=20)
    g.add_argument("--null_score_diff_threshold", type=float, default=0.0,
                   help="v2.0: answer '' when the no-answer score beats the best span by more than this")


def _check_squad(args):
    for name in ("doc_stride", "max_query_length", "max_answer_length", "n_best_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")


def squad_main(argv=None):
    from tencentpretrain.tasks.heads import build_task_model
    from tencentpretrain.tasks.squad import SquadTask, load_squad_data
    parser = _parser("Fine-tune a span-extraction model on SQuAD v1.1 / v2.0 JSON files.")
    _train_opts(parser, seq_length=384)
    _squad_opts(parser)
    args = parser.parse_args(argv)
    _check_squad(args)
    run = _run_config(args)
    set_seed(run.seed)  # before the head is initialised: same --seed, same model
    tokenizer = _tokenizer(args)
    cfg = _model_config(args, tokenizer)
    opts = (tokenizer, args.seq_length, args.doc_stride, args.max_query_length)
    train = load_squad_data(args.train_path, *opts, training=True, log=_log)
    devs = [(_name(p), load_squad_data(p, *opts, training=False, log=_log)) for p in args.dev_path or []]
    model = build_task_model(cfg, "span", pretrained_model_path=args.pretrained_model_path, log=_log)
    _save_config_beside(cfg, args)
    task = SquadTask(args.n_best_size, args.max_answer_length, args.null_score_diff_threshold)
    result = fit(model, task, train.tensors, devs, run, args.output_model_path, log=_log)
    if args.test_path:
        from tencentpretrain.tasks.engine import evaluate
        metrics = evaluate(model, task, load_squad_data(args.test_path, *opts, training=False, log=_log), run)
        _log(f"test ({args.test_path}): " + " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                     for k, v in metrics.items()))
        result["test"] = metrics
    return 0


def squad_infer_main(argv=None):
    from tencentpretrain.tasks.squad import SquadTask, load_squad_data
    parser = _parser("Answer SQuAD-format questions; writes the official predictions JSON {id: answer}.")
    _infer_opts(parser, seq_length=384)
    _squad_opts(parser)
    parser.add_argument("--nbest_path", default=None, help="also write the n-best answers with probabilities")
    parser.add_argument("--null_odds_path", default=None,
                        help="v2.0: also write {id: no-answer score minus best span score} (the official "
                             "script's --na-prob-file)")
    args = parser.parse_args(argv)
    _check_squad(args)
    run = _run_config(args)
    tokenizer = _tokenizer(args)
    cfg = _infer_config(args, tokenizer)
    model = _load_finetuned(args, cfg, "span").to(run.device)
    data = load_squad_data(args.test_path, tokenizer, args.seq_length, args.doc_stride, args.max_query_length,
                           training=False, log=_log)
    task = SquadTask(args.n_best_size, args.max_answer_length, args.null_score_diff_threshold)
    predictions, nbest, null_odds = task.predict(model, data, run)
    _write_json(args.prediction_path, predictions)
    if args.nbest_path:
        _write_json(args.nbest_path, nbest)
    if args.null_odds_path:
        _write_json(args.null_odds_path, null_odds)
    note = ""
    if any(qa.get("answers") for art in data.dataset for p in art["paragraphs"] for qa in p["qas"]):
        scores = (M.squad_v2_evaluate if data.version_2 else M.squad_v1_evaluate)(data.dataset, predictions)
        note = f" (exact {scores.get('exact', scores.get('exact_match')):.2f} f1 {scores['f1']:.2f})"
    _log(f"{len(predictions)} answers written to {args.prediction_path}{note}")
    return 0


def _write_json(path, obj):
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
