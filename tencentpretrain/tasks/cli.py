"""Command lines of finetune/*.py and inference/*.py: every task runs through finetune_main and infer_main.

The shared flags are defined here, the task's own flags by its Task class (tasks/base.py); the steps
are the same for every task, so a task says only what is particular to it.
"""
import argparse
import os

from tencentpretrain.errors import UserError
from tencentpretrain.opts import log_opts, model_config_from_args, model_opts, tokenizer_opts
from tencentpretrain.tasks.base import get_task
from tencentpretrain.tasks.engine import RunConfig, evaluate, fit, format_metrics, pick_device
from tencentpretrain.tasks.heads import build_task_model
from tencentpretrain.utils.log import check_log_path, info, logging_to
from tencentpretrain.utils.runtime import seed_everything
from tencentpretrain.data.tokenizers import build_tokenizer
from tencentpretrain.resources import resolve
from tencentpretrain.config import config_path_beside


# ---------------------------------------------------------------- options
def _parser(description):
    parser = argparse.ArgumentParser(description=description, epilog="Guide: docs/finetuning.md",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model_opts(parser)
    tokenizer_opts(parser)
    return parser


def _train_opts(parser, seq_length):
    g = parser.add_argument_group("fine-tuning")
    g.add_argument("--pretrained_model_path", default=None, help="pre-trained weights (.bin or .safetensors)")
    g.add_argument("--output_model_path", default="models/finetuned_model.bin",
                   help="where the best-on-dev weights are written")
    g.add_argument("--train_path", required=True, help="training file")
    g.add_argument("--dev_path", nargs="+", default=None,
                   help="dev file(s); the first one picks the best epoch (MNLI: matched then mismatched)")
    g.add_argument("--test_path", default=None, help="labelled test file, scored once with the best model")
    g.add_argument("--epochs_num", type=int, default=3, help="passes over the training file")
    g.add_argument("--batch_size", type=int, default=32, help="examples per batch")
    g.add_argument("--seq_length", type=int, default=seq_length, help="tokens per example, special tokens included")
    g.add_argument("--learning_rate", type=float, default=2e-5, help="peak learning rate")
    g.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps with a rising learning rate")
    g.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay")
    g.add_argument("--accumulation_steps", type=int, default=1, help="batches per optimizer step")
    g.add_argument("--seed", type=int, default=7, help="same seed, same model file (on CPU)")
    g.add_argument("--report_steps", type=int, default=100, help="progress line every this many steps")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    return g


def _infer_opts(parser, seq_length):
    g = parser.add_argument_group("inference")
    g.add_argument("--load_model_path", "--pretrained_model_path", dest="load_model_path", required=True,
                   help="fine-tuned weights")
    g.add_argument("--test_path", required=True, help="file to predict")
    g.add_argument("--prediction_path", required=True, help="where the predictions are written")
    g.add_argument("--batch_size", type=int, default=64, help="examples per batch")
    g.add_argument("--seq_length", type=int, default=seq_length, help="tokens per example (as in fine-tuning)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    return g


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
    return build_tokenizer(args.tokenizer, vocab_path=resolve(args.vocab_path),
                           spm_model_path=resolve(args.spm_model_path), do_lower_case=args.do_lower_case)


def _model_config(args, tokenizer):
    args.config_path = resolve(args.config_path)
    cfg = model_config_from_args(args, vocab_size=tokenizer.vocab_size)
    if args.seq_length > cfg.max_seq_length:
        raise UserError(f"--seq_length {args.seq_length} exceeds the model's max_seq_length {cfg.max_seq_length}")
    return cfg


def _log(msg):
    info(msg)  # the terminal, and the --log_path file when one is given


# ---------------------------------------------------------------- the two command lines
def finetune_main(task, argv=None):
    """Fine-tune `task` (a registered name or a Task class): read, encode, train, keep the best on dev."""
    finetune(task, argv)
    return 0


def finetune(task, argv=None):
    """finetune_main's work; returns {"best_epoch", "best", "history"} (engine.fit) plus "test" metrics."""
    task, args, run = _setup(task, argv, training=True)
    with logging_to(args.log_path, args.log_level, args.log_file_level):
        return _finetune(task, args, run)


def _finetune(task, args, run):
    seed_everything(run.seed)  # before the head is initialised: same --seed, same model
    tokenizer = _tokenizer(args)
    cfg = _model_config(args, tokenizer)
    train = task.read(args.train_path)
    devs = [(path, task.read(path)) for path in args.dev_path or []]
    test = task.read(args.test_path) if args.test_path else None
    task.prepare(cfg, [(args.train_path, train), *devs] + ([(args.test_path, test)] if test is not None else []))
    train_data = task.encode(train, tokenizer, args.seq_length, args.train_path, training=True)
    dev_sets = [(_name(path), task.encode(examples, tokenizer, args.seq_length, path)) for path, examples in devs]
    model = build_task_model(cfg, task.build_model(cfg), pretrained_model_path=args.pretrained_model_path, log=_log)
    config_path = _save_config_beside(cfg, args)
    try:
        result = fit(model, task, task.tensors(train_data), dev_sets, run, args.output_model_path, log=_log)
    except UserError:  # e.g. a non-finite loss before any model was saved: leave no config without weights
        if not os.path.exists(args.output_model_path):
            os.remove(config_path)
        raise
    if test is not None:
        result["test"] = evaluate(model, task, task.encode(test, tokenizer, args.seq_length, args.test_path), run)
        _log(f"test ({args.test_path}): {format_metrics(result['test'])}")
    return result


def infer_main(task, argv=None):
    """Predict with a model fine-tuned on `task`: load it (its head checked), read, encode, write."""
    task, args, run = _setup(task, argv, training=False)
    with logging_to(args.log_path, args.log_level, args.log_file_level):
        _infer(task, args, run)
    return 0


def _infer(task, args, run):
    tokenizer = _tokenizer(args)
    cfg = _infer_config(args, tokenizer)
    model = task.load_model(cfg, args).to(run.device)
    examples = task.read(args.test_path, labelled=False)
    data = task.encode(examples, tokenizer, args.seq_length, args.test_path)
    _log(task.write_predictions(data, task.predict(model, data, run)))
    return 0


def _setup(task, argv, training):
    """(task object, parsed flags, RunConfig) of one command line: the shared flags, then the task's."""
    task_cls = get_task(task)
    parser = _parser(task_cls.train_description if training else task_cls.infer_description)
    (_train_opts if training else _infer_opts)(parser, seq_length=task_cls.seq_length)
    task_cls.add_options(parser, training)
    log_opts(parser)
    args = parser.parse_args(argv)
    if args.log_path:
        check_log_path(args.log_path)
    run = _run_config(args)
    return task_cls.from_args(args, _log), args, run


def _name(path):
    return os.path.splitext(os.path.basename(path))[0]


# ---------------------------------------------------------------- the config beside a fine-tuned model
def config_beside(model_path):
    """`models/x.bin` -> `models/x_config.json`: where fine-tuning records the model config."""
    return config_path_beside(model_path)


def _save_config_beside(cfg, args):
    """Record the config (pooling and labels_num included) so inference rebuilds the same model; returns its path."""
    path = config_beside(args.output_model_path)
    if args.config_path and os.path.abspath(path) == os.path.abspath(args.config_path):
        raise UserError(f"--output_model_path {args.output_model_path} would overwrite --config_path {path} with "
                        "the fine-tuned model's config; choose another --output_model_path")
    cfg.save(path)
    _log(f"model config written to {path}")
    return path


def _infer_config(args, tokenizer):
    """The model config for inference: --config_path, else the one fine-tuning wrote beside the model."""
    beside = config_beside(args.load_model_path)
    if args.config_path is None and os.path.isfile(beside):
        args.config_path = beside
        _log(f"model config: {beside} (written beside the model by fine-tuning)")
    return _model_config(args, tokenizer)
