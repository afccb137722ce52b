"""pretrain.py's library side: options (TencentPretrain's flag names), checks, and one run per process.

    python pretrain.py --dataset_path dataset.tpd --config_path models/bert/base_config.json \
        --output_model_path models/bert_base.bin --total_steps 10000 --batch_size 32 [--bf16]
    ... --world_size 2 --gpu_ranks 0 1            # two processes on this node (GPUs, else CPU + gloo)
    torchrun --nproc_per_node 2 pretrain.py ...    # the same, started by torchrun

Writes `<output_model_path>-<step>` (+ `.state.pt`) every --save_checkpoint_steps and at the last step,
and `<output_model_path>` as a symbolic link to the last one (see training/checkpoint.py).
Before training: the options and the output are checked (training/outputs.py: a writable file path,
enough disk for a checkpoint pair), the output is locked (`<output_model_path>.lock`, one run at a time)
and temporaries of a killed save are removed; a resume compares its options with the checkpoint's
(training/resume_options.py) before anything is written.

Guide: docs/pretraining.md
"""
import argparse
import contextlib
import math
import os
from dataclasses import dataclass, field

import torch

from tencentpretrain import features
from tencentpretrain.config import config_path_beside, read_config_file
from tencentpretrain.data.dataset import Dataset, check_compatible, check_token_ids, processor_of, read_header, verify
from tencentpretrain.data.loader import build_loader
from tencentpretrain.data.tokenizers import build_tokenizer
from tencentpretrain.errors import UserError
from tencentpretrain.model_builder import build_model
from tencentpretrain.opts import _bool, log_opts, model_config_from_args, model_opts, parse_args, tokenizer_opts
from tencentpretrain.registry import TARGETS
from tencentpretrain.training import checkpoint as ckpt
from tencentpretrain.training import distributed, outputs, plugins
from tencentpretrain.training.optim import SCHEDULERS, check_rates
from tencentpretrain.training.resume_options import dataset_fingerprint
from tencentpretrain.training.trainer import TrainConfig, Trainer
from tencentpretrain.utils.log import check_log_path, info, logging_to
from tencentpretrain.utils.runtime import seed_everything


def training_opts(parser):
    g = parser.add_argument_group("training")
    g.add_argument("--dataset_path", required=True, help="dataset written by preprocess.py")
    g.add_argument("--verify_dataset", action="store_true",
                   help="check every byte of the dataset against its checksums before training (reads the whole "
                        "file); without it the header and the first and last MiB of each array are checked")
    g.add_argument("--pretrained_model_path", default=None, help="initial weights (e.g. a teacher)")
    g.add_argument("--output_model_path", required=True,
                   help="checkpoints go to <output_model_path>-<step>; this name is linked to the last one")
    g.add_argument("--total_steps", type=int, default=100000, help="optimizer steps")
    g.add_argument("--save_checkpoint_steps", type=int, default=10000,
                   help="save every this many steps (and at the last step)")
    g.add_argument("--report_steps", type=int, default=100, help="print a progress line every this many steps")
    g.add_argument("--accumulation_steps", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--batch_size", type=int, default=32, help="instances per process and micro-batch")
    g.add_argument("--seed", type=int, default=7, help="seeds weights, dropout, data order and masks")
    g.add_argument("--resume", action="store_true",
                   help="continue from the latest <output_model_path>[-<step>] with its .state.pt, if any")
    g.add_argument("--resume_from", default=None, help="continue from this model file and its .state.pt")
    o = parser.add_argument_group("optimization")
    o.add_argument("--optimizer", choices=("adamw",), default="adamw", help="torch's AdamW")
    o.add_argument("--learning_rate", type=float, default=2e-5, help="peak learning rate (after warmup)")
    o.add_argument("--weight_decay", type=float, default=0.01, help="not applied to biases and LayerNorm")
    o.add_argument("--bias_correction", type=_bool, default=True, metavar="{true,false}",
                   help="Adam bias correction; false reproduces TencentPretrain's BertAdam")
    o.add_argument("--warmup", type=float, default=0.1, help="warmup as a fraction of --total_steps")
    o.add_argument("--scheduler", choices=SCHEDULERS, default="linear",
                   help="decay after warmup: linear or cosine towards 0, or constant")
    o.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping; 0 disables it")
    o.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU and GPU)")
    o.add_argument("--fp16", action="store_true", help="fp16 autocast with a loss scaler (GPU only)")
    d = parser.add_argument_group("processes")
    d.add_argument("--world_size", type=int, default=1, help="total processes over all nodes")
    d.add_argument("--gpu_ranks", type=int, nargs="+", default=[],
                   help="global ranks run on this node, one process each (process i uses local GPU i)")
    d.add_argument("--master_ip", default="tcp://localhost:12345", help="rendezvous address")
    d.add_argument("--backend", choices=("nccl", "gloo"), default=None,
                   help="default: nccl on GPU, gloo on CPU")
    d.add_argument("--zero_optimizer", action="store_true",
                   help="shard the optimizer state over the data-parallel processes (ZeRO stage 1, as "
                        "TencentPretrain's --deepspeed ZeRO configs): each keeps Adam's moments for 1/N of the "
                        "parameters; same updates and checkpoints; no effect in one process (docs/performance.md)")
    return g


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    training_opts(parser)
    model_opts(parser)
    tokenizer_opts(parser)
    g = log_opts(parser)
    g.add_argument("--tensorboard_dir", default=None,
                   help="write a TensorBoard event log of loss, metrics, lr (and plugin scalars) at every report "
                        "step; needs the optional package 'tensorboard'")
    g.add_argument("--tb_path", dest="tensorboard_dir", metavar="TB_PATH", default=argparse.SUPPRESS,
                   help="the same as --tensorboard_dir (the WID reference code's name)")
    return parser  # features' options (WID's --target_dim ...) are added by parse_args when given


@dataclass
class PretrainJob:
    """Everything a process needs; built and checked once, before any process starts."""
    model_cfg: object
    train_cfg: TrainConfig
    dataset_path: str
    batch_size: int
    pretrained_model_path: str = None
    resume_from: str = None
    resume_latest: bool = False
    logging: tuple = (None, "INFO", "INFO")  # --log_path, --log_level, --log_file_level
    config_path: str = None
    run_info: dict = field(default_factory=dict)  # what a resume compares beyond train_cfg (resume_options.py)


def train_config_from_args(args):
    if args.bf16 and args.fp16:
        raise UserError("--bf16 and --fp16 exclude each other; pick one")
    for name in ("total_steps", "save_checkpoint_steps", "report_steps", "accumulation_steps", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    check_rates(args.learning_rate, args.weight_decay)
    if not 0.0 <= args.warmup <= 1.0:
        raise UserError(f"--warmup {args.warmup}: a fraction of --total_steps between 0 and 1 (e.g. 0.1)")
    if not 0.0 <= args.max_grad_norm < math.inf:
        raise UserError(f"--max_grad_norm {args.max_grad_norm}: must be >= 0 (0 disables clipping)")
    return TrainConfig(
        total_steps=args.total_steps, accumulation_steps=args.accumulation_steps,
        learning_rate=args.learning_rate, weight_decay=args.weight_decay, warmup=args.warmup,
        scheduler=args.scheduler, optimizer=args.optimizer, bias_correction=args.bias_correction,
        max_grad_norm=args.max_grad_norm, precision="bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        report_steps=args.report_steps, save_checkpoint_steps=args.save_checkpoint_steps,
        output_model_path=args.output_model_path, seed=args.seed, tensorboard_dir=args.tensorboard_dir,
        zero_optimizer=args.zero_optimizer)


def check_dataset(dataset_path, model_cfg, verify_all=False):
    """The dataset must be intact (its checksums; every byte with `verify_all`, --verify_dataset) and
    made for this model: vocabulary (and every token id below its size), length, processor, targets."""
    if not os.path.isfile(dataset_path):
        raise UserError(f"--dataset_path {dataset_path}: file not found; make it with preprocess.py")
    header = read_header(dataset_path)  # its checksum, size and array layout
    if not verify(dataset_path, header, full=verify_all):
        info(f"note: {dataset_path} is a format version {header.version} dataset: it has no checksums, so "
             "damage to it cannot be detected; re-run preprocess.py to get them", flush=True)
    elif verify_all:
        info(f"--verify_dataset: every array of {dataset_path} matches its checksum", flush=True)
    check_compatible(header, model_cfg.vocab_size, model_cfg.max_seq_length, model_cfg.data_processor,
                     path=dataset_path)
    provided = processor_of(header, dataset_path).targets  # the batch targets its processor declares
    # A variant target (WID's "wid_mlm") names the target it stands for in `key_name`.
    wanted = {getattr(TARGETS.get(name), "key_name", name) for name in model_cfg.target}
    if not wanted <= provided:
        raise UserError(f"{dataset_path} ('{header.processor}' processor) has targets for "
                        f"{sorted(provided)} but the model config asks for {model_cfg.target}; set --target "
                        f"{' '.join(sorted(provided))} or re-run preprocess.py with another --data_processor")
    check_token_ids(Dataset(dataset_path), model_cfg.vocab_size)
    return header


def prepare(argv=None):
    """Parse and check everything in the launching process, so errors are reported once."""
    args = parse_args(build_parser(), argv)  # model flags not typed are absent
    train_cfg = train_config_from_args(args)
    model_cfg = features.apply_options(model_config_from_args(args), args)  # may switch WID on
    if model_cfg.vocab_size is None:
        model_cfg.vocab_size = build_tokenizer(args.tokenizer, args.vocab_path, args.spm_model_path,
                                               args.do_lower_case).vocab_size
    check_dataset(args.dataset_path, model_cfg, args.verify_dataset)
    if args.resume_from and args.resume:
        raise UserError("--resume and --resume_from exclude each other")
    if args.log_path:
        check_log_path(args.log_path)
    if args.tensorboard_dir and os.path.exists(args.tensorboard_dir) and not os.path.isdir(args.tensorboard_dir):
        raise UserError(f"--tensorboard_dir {args.tensorboard_dir}: a file, not a folder; give a folder path")
    for flag in ("pretrained_model_path", "resume_from"):
        path = getattr(args, flag)
        if path and not os.path.isfile(path):
            raise UserError(f"--{flag} {path}: file not found")
    outputs.check_output_path(args.output_model_path)
    run_info = {"batch_size": args.batch_size, "dataset": dataset_fingerprint(args.dataset_path),
                "model_config": model_cfg.to_dict(), "log_path": args.log_path, "log_level": args.log_level,
                "log_file_level": args.log_file_level}
    job = PretrainJob(model_cfg, train_cfg, args.dataset_path, args.batch_size, args.pretrained_model_path,
                      args.resume_from, args.resume, (args.log_path, args.log_level, args.log_file_level),
                      args.config_path, run_info)
    return job, args


def run_process(env, job):
    """One process's run, logging as --log_path/--log_level say (other ranks: warnings only)."""
    with logging_to(*job.logging, quiet=not env.is_main):
        return _train(env, job)


def _train(env, job):
    """Build the model, plugins, loader and trainer; load or resume; train."""
    seed_everything(job.train_cfg.seed)  # the same initial weights on every rank
    model = build_model(job.model_cfg)
    callbacks, claims = plugins.build_plugins(model, job.model_cfg, job.train_cfg)
    loader = build_loader(job.dataset_path, job.batch_size, env.rank, env.world_size, job.train_cfg.seed)
    resume_from, state = job.resume_from, None
    if job.resume_latest:  # the newest intact pair (a damaged newer one is skipped with a note)
        resume_from, state = ckpt.find_resumable(job.train_cfg.output_model_path,
                                                 log=info if env.is_main else lambda *a, **k: None)
        if resume_from is None:
            info(f"--resume: no checkpoint {job.train_cfg.output_model_path}[-<step>] with a state file yet; "
                 f"starting from step 0", flush=True)
    if job.pretrained_model_path and not resume_from:  # a resume brings its own weights
        plugins.load_pretrained(model, job.model_cfg, job.pretrained_model_path)
    trainer = Trainer(model, loader, job.train_cfg, env=env, callbacks=callbacks, claims=claims,
                      run_info=job.run_info)
    if resume_from:  # before anything is written: a refused resume leaves the output as it was
        trainer.resume(resume_from, state)
    if env.is_main and job.train_cfg.output_model_path:
        _record_config(job.model_cfg, job.train_cfg.output_model_path, job.config_path)
    return trainer.fit()


def _record_config(model_cfg, output_model_path, config_path=None):
    """Write the model config beside the checkpoints (`<stem>_config.json`), as fine-tuning and the merge do,
    so the converters and inference find it without --config_path. A --config_path that already is that
    file is never rewritten (flags given on the command line are then only in the log)."""
    path = config_path_beside(output_model_path)
    if config_path and os.path.abspath(path) == os.path.abspath(config_path):
        differ = sorted(k for k, v in model_cfg.to_dict().items() if read_config_file(path).get(k) != v)
        if differ:
            info(f"note: {path} is --config_path, so it is left as it is; this run's config differs from it in "
                 f"{', '.join(differ)} (pass the same flags, or --config_path of a copy, to reuse it)", flush=True)
        return
    model_cfg.save(path)
    info(f"model config written to {path}", flush=True)


def main(argv=None):
    job, args = prepare(argv)
    out = job.train_cfg.output_model_path
    owner = distributed.is_launcher()  # under DDP one process speaks for the run's outputs
    with outputs.OutputLock(out) if owner else contextlib.nullcontext():
        if owner:
            outputs.remove_stale_partials(out)
            _check_free_space(job)
        distributed.run(_Process(job), args.world_size, args.gpu_ranks, args.master_ip, args.backend)


def _check_free_space(job):
    """outputs.check_free_space with the model's size, counted on the meta device (no memory, no init)."""
    try:
        with torch.device("meta"):
            n_params = sum(p.numel() for p in build_model(job.model_cfg).parameters())
    except Exception:  # a model that cannot be built on meta: the estimate is skipped, not the run
        return
    cfg = job.train_cfg
    outputs.check_free_space(cfg.output_model_path, n_params, cfg.total_steps // cfg.save_checkpoint_steps + 1)


class _Process:
    """Picklable `fn(env)` for the spawned processes."""

    def __init__(self, job):
        self.job = job

    def __call__(self, env):
        run_process(env, self.job)
