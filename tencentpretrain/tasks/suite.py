"""GLUE and SQuAD v1.1 as one benchmark: what is run, on which data, and one result per (model, task, seed).

Each task is fine-tuned through the registered tasks (`classification`, `regression`, `squad`) and the
shared engine, exactly as finetune/run_*.py would, and scored with its official metric on dev data.
The GLUE files are read in their original formats through tasks/glue.py's converters. SQuAD trains on
one file's articles and is scored on another's (by default the two disjoint halves of the official
dev set in ../shared/data/squad).

A cell is one (model, task, seed). Its result is written atomically to
`<output_dir>/cells/<model>/<task>/seed<N>.json` together with a fingerprint of everything that sets
its number (weights, config, data, caps, hyper-parameters), so a re-run skips finished cells and
refuses to mix cells computed under other settings. tasks/suite_report.py turns the cells into
results.json and the Markdown table; tasks/suite_cli.py is the command line.
"""
import argparse
import dataclasses
import json
import os
import random
import time

from tencentpretrain.config import load_model_config, table_sizes
from tencentpretrain.errors import UserError
from tencentpretrain.model_io import load_state_dict_file
from tencentpretrain.tasks import glue
from tencentpretrain.tasks.base import get_task
from tencentpretrain.tasks.engine import RunConfig, evaluate, fit
from tencentpretrain.tasks.heads import build_task_model
from tencentpretrain.training.checkpoint import sha256_file
from tencentpretrain.utils.io import write_json
from tencentpretrain.utils.runtime import seed_everything

DATA_SEED = 0  # which examples a cap keeps, and the QNLI-style dev split: the same for every model and seed


@dataclasses.dataclass(frozen=True)
class SuiteTask:
    name: str        # GLUE's folder name, or "SQuAD"
    kind: str        # the registered fine-tuning task that runs it
    metric: str      # the headline metric (picks the epoch with --select_best_epoch)
    score: tuple     # metrics averaged into the task score (the GLUE paper's convention)
    shown: tuple     # metrics the table shows
    family: str      # which --seq_length applies: single, pair or squad
    evals: tuple = (("dev.tsv", ""),)  # (file, suffix of its metric names)


def _glue(name, metric, score=None, kind="classification", family="pair", **kw):
    score = score or (metric,)
    return SuiteTask(name, kind, metric, score, score, family, **kw)


# GLUE's task order (the paper's table), then SQuAD.
TASKS = {t.name: t for t in (
    _glue("CoLA", "mcc", family="single"),
    _glue("SST-2", "acc", family="single"),
    _glue("MRPC", "f1", ("f1", "acc")),
    _glue("STS-B", "pearson", ("pearson", "spearman"), kind="regression"),
    _glue("QQP", "f1", ("f1", "acc")),
    _glue("MNLI", "acc", ("acc", "acc_mm"), evals=(("dev_matched.tsv", ""), ("dev_mismatched.tsv", "_mm"))),
    _glue("QNLI", "acc"),
    _glue("RTE", "acc"),
    _glue("WNLI", "acc"),
    SuiteTask("SQuAD", "squad", "f1", ("f1",), ("exact_match", "f1"), "squad", evals=(("eval", ""),)),
)}
GLUE_TASKS = tuple(name for name in TASKS if name != "SQuAD")


def find_task(name):
    """A SuiteTask by name, ignoring case and dashes (sst2, SST-2, squad)."""
    key = name.replace("-", "").lower()
    for task in TASKS.values():
        if task.name.replace("-", "").lower() == key:
            return task
    raise UserError(f"unknown benchmark task '{name}'; choose from: {', '.join(TASKS)}")


# ---------------------------------------------------------------- settings
@dataclasses.dataclass
class Settings:
    """Everything but the model that sets a cell's number (and how the run is carried out)."""
    max_train_examples: int = 0      # 0: all
    max_eval_examples: int = 0
    caps: dict = dataclasses.field(default_factory=dict)       # task -> train cap
    eval_caps: dict = dataclasses.field(default_factory=dict)  # task -> eval cap
    epochs_num: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-4
    warmup: float = 0.1
    seq_length: dict = dataclasses.field(default_factory=lambda: {"single": 64, "pair": 128, "squad": 384})
    doc_stride: int = 128
    max_query_length: int = 64
    dev_split: bool = False
    select_best_epoch: bool = False
    bf16: bool = False
    device: str = "cpu"
    report_steps: int = 0            # 0: about five progress lines per cell

    def cap(self, task, train):
        caps, default = (self.caps, self.max_train_examples) if train else (self.eval_caps, self.max_eval_examples)
        return caps.get(task, default)

    def run_config(self, seed, n_train):
        steps = self.epochs_num * -(-n_train // self.batch_size)
        return RunConfig(epochs_num=self.epochs_num, batch_size=self.batch_size, learning_rate=self.learning_rate,
                         warmup=self.warmup, seed=seed, report_steps=self.report_steps or max(1, -(-steps // 5)),
                         bf16=self.bf16, device=self.device)


# ---------------------------------------------------------------- data
@dataclasses.dataclass
class Sources:
    """Where a task's data is: the training file (None: split the eval file) and the eval files."""
    train: str | None
    evals: list  # [(path, suffix)]


def find_sources(tasks, glue_dir, squad_train, squad_eval, dev_split, log=print):
    """{task name: Sources} of the tasks whose data is present; prints a note for each one skipped."""
    found = {}
    for task in tasks:
        if task.name == "SQuAD":
            missing = [p for p in (squad_train, squad_eval) if not os.path.isfile(p)]
            if missing:
                log(f"skip SQuAD: {' and '.join(missing)} not found (pass --squad_dir or --squad_train_path / "
                    "--squad_eval_path)")
            else:
                found["SQuAD"] = Sources(squad_train, [(squad_eval, "")])
            continue
        folder = os.path.join(glue_dir, task.name)
        train = os.path.join(folder, "train.tsv")
        evals = [(os.path.join(folder, f), suffix) for f, suffix in task.evals]
        absent = [os.path.basename(p) for p, _ in evals if not os.path.isfile(p)]
        if not os.path.isdir(folder):
            log(f"skip {task.name}: no folder {folder}")
        elif absent:
            log(f"skip {task.name}: no {', '.join(absent)} in {folder}")
        elif os.path.isfile(train):
            found[task.name] = Sources(train, evals)
        elif dev_split and len(evals) == 1:
            found[task.name] = Sources(None, evals)
        else:
            log(f"skip {task.name}: no train.tsv in {folder}"
                + (" (only dev data: pass --dev_split to train on half of its dev questions and score the other "
                   "half)" if len(evals) == 1 else ""))
    return found


def subsample(items, n, seed=DATA_SEED):
    """At most `n` of `items` (0: all), drawn at random with a fixed seed, in their original order."""
    if not n or n >= len(items):
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def split_by_text_a(examples, seed=DATA_SEED):
    """(train, eval) halves of a dev file, whole groups of rows sharing text_a (a QNLI question) on one side."""
    keys = sorted({ex.text_a for ex in examples})
    random.Random(seed).shuffle(keys)
    train_keys = set(keys[:len(keys) // 2])
    return ([ex for ex in examples if ex.text_a in train_keys], [ex for ex in examples if ex.text_a not in train_keys])


@dataclasses.dataclass
class TaskData:
    """One task ready to train: its bound Task object, the examples `prepare` checks, encoded train/eval sets."""
    spec: SuiteTask
    task: object
    splits: list      # [(path, examples)] for Task.prepare, training set first
    train: object     # encoded
    evals: list       # [(name, encoded, suffix)]
    n_train: int
    n_eval: int
    fingerprint: dict
    note: str = ""    # how the data was made, when it is not the official train / dev pair


def task_object(spec, settings, log):
    """The registered Task for `spec`, bound to the few flags it reads."""
    cls = get_task(spec.kind)
    if spec.kind == "squad":
        return cls().bind(argparse.Namespace(doc_stride=settings.doc_stride,
                                             max_query_length=settings.max_query_length), log)
    labels = glue.TASKS[spec.name].labels
    return cls(metric=spec.metric).bind(argparse.Namespace(labels_num=len(labels) if labels else None), log)


def load_task_data(spec, sources, settings, tokenizer, work_dir, log=print):
    """Read (GLUE: convert first), cap and encode one task's data."""
    task = task_object(spec, settings, lambda msg: log(f"  {msg}"))
    seq_length = settings.seq_length[spec.family]
    read = _read_squad if spec.kind == "squad" else _read_glue
    (train_path, train), evals, note = read(spec, sources, task, work_dir, log)
    train = _cap(spec, train, settings.cap(spec.name, True))
    evals = [(path, _cap(spec, examples, settings.cap(spec.name, False)), suffix) for path, examples, suffix in evals]
    encoded = [(os.path.splitext(os.path.basename(p))[0], task.encode(ex, tokenizer, seq_length, p), s)
               for p, ex, s in evals]
    size = _size_of(spec)
    fingerprint = {"task": spec.name, "data_sha256": [sha256_file(p) for p in _files(sources)],
                   "train_examples": size(train), "eval_examples": [size(ex) for _, ex, _ in evals],
                   "seq_length": seq_length, "split": note or None,
                   "tokenizer": [type(tokenizer).__name__, tokenizer.vocab_size,
                                 getattr(tokenizer, "do_lower_case", None)]}
    if spec.kind == "squad":
        fingerprint.update(doc_stride=settings.doc_stride, max_query_length=settings.max_query_length)
    return TaskData(spec, task, [(train_path, train)] + [(p, ex) for p, ex, _ in evals],
                    task.encode(train, tokenizer, seq_length, train_path, training=True), encoded,
                    size(train), sum(size(ex) for _, ex, _ in evals), fingerprint, note)


def _files(sources):
    return ([sources.train] if sources.train else []) + [p for p, _ in sources.evals]


def _size_of(spec):
    return (lambda squad: len(squad[0])) if spec.kind == "squad" else len


def _read_glue(spec, sources, task, work_dir, log):
    """Convert the official files with tasks/glue.py, then read them as the classification task does."""
    def convert(path):
        out = os.path.join(work_dir, spec.name, os.path.basename(path))
        n, skipped, _ = glue.convert_file(glue.TASKS[spec.name], path, out, skip_bad_rows=True)
        if skipped:
            log(f"{spec.name} {os.path.basename(path)}: {skipped} malformed rows skipped ({n} kept)")
        return out, task.read(out)

    evals = [(*convert(path), suffix) for path, suffix in sources.evals]
    if sources.train:
        return convert(sources.train), evals, ""
    (path, examples, suffix), = evals
    train, held_out = split_by_text_a(examples)
    note = (f"no train.tsv: trained on {len(train)} rows of dev.tsv (half of its distinct first sentences), "
            f"scored on the other {len(held_out)}")
    log(f"{spec.name}: {note}")
    return (path, train), [(path, held_out, suffix)], note


def _read_squad(spec, sources, task, work_dir, log):
    train = task.read(sources.train)
    (eval_path, _), = sources.evals
    held_out = task.read(eval_path)
    for path, (_, _, version_2) in ((sources.train, train), (eval_path, held_out)):
        if version_2:
            raise UserError(f"{path} is SQuAD v2.0; this benchmark scores SQuAD v1.1 (pass v1.1 files)")
    shared = {ex.qid for ex in train[0]} & {ex.qid for ex in held_out[0]}
    if shared:
        raise UserError(f"{sources.train} and {eval_path} share {len(shared)} question ids (e.g. "
                        f"{sorted(shared)[0]}); training and evaluation questions must be disjoint")
    return (sources.train, train), [(eval_path, held_out, "")], ""


def _cap(spec, data, n):
    if spec.kind != "squad":
        return subsample(data, n)
    examples, dataset, version_2 = data
    kept = subsample(examples, n)
    qids = {ex.qid for ex in kept}
    # the official scorer counts every question of the dataset: keep only those asked
    dataset = [{**art, "paragraphs": [{**p, "qas": [qa for qa in p["qas"] if qa["id"] in qids]}
                                      for p in art["paragraphs"]]} for art in dataset]
    return kept, dataset, version_2


# ---------------------------------------------------------------- models
@dataclasses.dataclass
class ModelSpec:
    """A checkpoint to benchmark (path None: random initialisation of the config)."""
    name: str
    path: str | None
    config_path: str
    sizes: dict = dataclasses.field(default_factory=dict)  # vocab_size / max_seq_length of its weights
    sha256: str | None = None

    def load(self, tokenizer, seq_lengths):
        """Read the weights' table sizes and hash; check the vocabulary and sequence lengths fit."""
        if self.path:
            self.sizes = table_sizes(load_state_dict_file(self.path))
            self.sha256 = sha256_file(self.path)
        rows = self.sizes.setdefault("vocab_size", tokenizer.vocab_size)
        if tokenizer.vocab_size > rows:
            raise UserError(f"model '{self.name}': the vocabulary has {tokenizer.vocab_size} tokens but "
                            f"{self.path}'s embedding table has {rows} rows; pass the --vocab_path it was trained with")
        cfg = self.config()
        too_long = {k: v for k, v in seq_lengths.items() if v > cfg.max_seq_length}
        if too_long:
            raise UserError(f"model '{self.name}' takes at most {cfg.max_seq_length} tokens, but the sequence length "
                            f"of {', '.join(too_long)} tasks is {max(too_long.values())}; lower --seq_length_*")
        return self

    def config(self):
        return load_model_config(self.config_path, dict(self.sizes))

    def fingerprint(self):
        return {"weights_sha256": self.sha256, "config": self.config().to_dict()}


# ---------------------------------------------------------------- cells
def cell_path(output_dir, model, task, seed):
    return os.path.join(output_dir, "cells", model, task, f"seed{seed}.json")


def cell_fingerprint(model, data, settings, seed):
    run = {k: getattr(settings, k) for k in ("epochs_num", "batch_size", "learning_rate", "warmup",
                                              "select_best_epoch", "bf16")}
    return {"model": model.fingerprint(), "data": data.fingerprint, "run": run, "seed": seed}


def read_cell(path, fingerprint):
    """The stored result of a finished cell with this fingerprint; None if there is none (or it is unreadable)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            cell = json.load(f)
    except (OSError, ValueError):
        return None
    old = json.loads(json.dumps(cell.get("fingerprint")))
    new = json.loads(json.dumps(fingerprint))  # tuples -> lists, as stored
    if old != new:
        diff = sorted(_differences(old or {}, new))
        raise UserError(f"{path} was computed with other settings ({', '.join(diff[:4])} differ); use another "
                        "--output_dir, or pass --rerun to recompute every cell")
    return cell


def _differences(old, new, prefix=""):
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            yield from _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            yield f"{prefix}{key}"


def run_cell(model, data, settings, seed, log=print):
    """Fine-tune `model` on one task with one seed and score it; returns the cell's result (metrics in percent)."""
    task, spec = data.task, data.spec
    start = time.time()
    seed_everything(seed)  # the new head's initialisation
    cfg = model.config()
    task.prepare(cfg, data.splits)
    net = build_task_model(cfg, task.build_model(cfg), pretrained_model_path=model.path, log=log)
    run = settings.run_config(seed, len(next(iter(task.tensors(data.train).values()))))
    named = [(name, encoded) for name, encoded, _ in data.evals]
    if settings.select_best_epoch:
        result = fit(net, task, task.tensors(data.train), named, run, log=log)
        reports, best_epoch = result["history"][result["best_epoch"] - 1], result["best_epoch"]
    else:
        fit(net, task, task.tensors(data.train), [], run, log=log)
        reports, best_epoch = {name: evaluate(net, task, encoded, run) for name, encoded in named}, run.epochs_num
    metrics = {}
    for name, _, suffix in data.evals:
        scale = 1.0 if spec.kind == "squad" else 100.0  # SQuAD's scorer already gives percent
        metrics.update({k + suffix: scale * v for k, v in reports[name].items()
                        if isinstance(v, float) and (spec.kind != "squad" or k in spec.shown)})
    return {"model": model.name, "task": spec.name, "seed": seed, "metrics": metrics,
            "score": sum(metrics[k] for k in spec.score) / len(spec.score),
            "epoch": best_epoch, "train_examples": data.n_train, "eval_examples": data.n_eval,
            "backbone_parameters": sum(p.numel() for n, p in net.named_parameters()
                                       if n.startswith(("embedding.", "encoder."))),
            "wall_s": time.time() - start, "note": data.note or None}


def save_cell(path, cell, fingerprint):
    write_json(path, {**cell, "fingerprint": fingerprint})
