"""scripts/benchmark_glue.py: fine-tune checkpoints on the GLUE tasks and SQuAD v1.1 present, several seeds.

    python scripts/benchmark_glue.py --pretrained_model_path models/student.bin --preset quick
    python scripts/benchmark_glue.py --model teacher=runs/t.bin --model wid=runs/s.bin:runs/s_config.json \\
        --seeds 1 2 3 --output_dir runs/glue

Writes <output_dir>/results.json (per model, task and seed; mean and std; settings; wall time) and
results.md (one row per model); every (model, task, seed) cell is kept in <output_dir>/cells/, and a
re-run skips the finished ones. Tasks whose files are absent are skipped with a note.
"""
import argparse
import collections
import dataclasses
import os
import re
import statistics
import sys
import time

import torch

from tencentpretrain.config import config_path_beside
from tencentpretrain.data.tokenizers import build_tokenizer
from tencentpretrain.errors import UserError
from tencentpretrain.opts import tokenizer_opts
from tencentpretrain.resources import repo_root, resolve
from tencentpretrain.tasks import suite
from tencentpretrain.tasks.engine import pick_device
from tencentpretrain.tasks.suite_report import markdown_table, model_summary
from tencentpretrain.utils.io import atomic_write, write_json
from tencentpretrain.utils.runtime import format_duration

SHARED_DATA = os.path.join(os.path.dirname(repo_root()), "shared", "data")

# CPU-sized defaults; every value can be overridden by its flag.
PRESETS = {
    # seconds: a smoke test of the whole path (numbers mean nothing)
    "tiny": dict(max_train_examples=64, max_eval_examples=64, epochs_num=1, batch_size=16, seeds=[1],
                 seq_length={"single": 32, "pair": 64, "squad": 128}, doc_stride=64,
                 caps={"SQuAD": 32}, eval_caps={"SQuAD": 32}),
    # a comparison of small models on 2 CPU cores: 1000 training examples per task, 2 epochs, 3 seeds
    "quick": dict(max_train_examples=1000, max_eval_examples=500, epochs_num=2, batch_size=32, seeds=[1, 2, 3],
                  seq_length={"single": 64, "pair": 128, "squad": 256}, doc_stride=128,
                  caps={"SQuAD": 500}, eval_caps={"SQuAD": 500}),
    # every example, as the GLUE papers fine-tune (hours per model on a CPU)
    "full": dict(max_train_examples=0, max_eval_examples=0, epochs_num=3, batch_size=32, seeds=[1, 2, 3],
                 seq_length={"single": 64, "pair": 128, "squad": 384}, doc_stride=128, caps={}, eval_caps={}),
}
MODEL_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Guide: docs/finetuning.md",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("models (one with --pretrained_model_path/--config_path, or several with --model)")
    g.add_argument("--pretrained_model_path", default=None, help="weights (.bin / .safetensors)")
    g.add_argument("--config_path", default=None, help="its model config (default: <stem>_config.json beside it); "
                   "without --pretrained_model_path: a randomly initialised model of this config")
    g.add_argument("--name", default=None, help="the model's row in the table (default: the weights' file stem)")
    g.add_argument("--model", action="append", default=[], metavar="NAME=PATH[:CONFIG]",
                   help="a model to benchmark, repeatable (one table row each); an empty PATH with a CONFIG is a "
                        "random initialisation, e.g. random=:models/bert/mini_config.json")
    tokenizer_opts(p)
    g = p.add_argument_group("data")
    g.add_argument("--glue_dir", default=os.path.join(SHARED_DATA, "glue"),
                   help="one folder per GLUE task (CoLA, SST-2, ...) with the official train.tsv / dev.tsv")
    g.add_argument("--squad_dir", default=os.path.join(SHARED_DATA, "squad"), help="folder with dev-v1.1.json and dev-v1.1.part2.json")
    g.add_argument("--squad_train_path", default=None, help="SQuAD v1.1 JSON to train on "
                   "(default: <squad_dir>/dev-v1.1.json, half of the official dev set's articles)")
    g.add_argument("--squad_eval_path", default=None, help="SQuAD v1.1 JSON to score, no question shared with the "
                   "training file (default: <squad_dir>/dev-v1.1.part2.json, the other half)")
    g.add_argument("--tasks", nargs="+", default=list(suite.TASKS), metavar="TASK",
                   help=f"of {', '.join(suite.TASKS)}")
    g.add_argument("--dev_split", action="store_true",
                   help="a task with dev.tsv but no train.tsv (QNLI in ../shared/data) trains on half of the dev "
                        "rows (grouped by first sentence) and is scored on the other half; default: skipped")
    g = p.add_argument_group("run (defaults from --preset)")
    g.add_argument("--preset", choices=PRESETS, default="quick", help="tiny: a smoke test; quick: 1000 train / 500 eval examples, 2 epochs, 3 seeds; full: all, 3 epochs")
    g.add_argument("--seeds", nargs="+", type=int, default=None, help="fine-tuning seeds per task")
    g.add_argument("--max_train_examples", type=int, default=None, help="per task, drawn at random once; 0: all")
    g.add_argument("--max_eval_examples", type=int, default=None, help="per task (SQuAD: questions); 0: all")
    g.add_argument("--cap", action="append", default=[], metavar="TASK=N", help="a task's own training cap")
    g.add_argument("--eval_cap", action="append", default=[], metavar="TASK=N", help="a task's own evaluation cap")
    g.add_argument("--epochs_num", type=int, default=None, help="epochs per task")
    g.add_argument("--batch_size", type=int, default=None, help="examples per batch")
    g.add_argument("--learning_rate", type=float, default=1e-4, help="peak learning rate")
    g.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps with a rising learning rate")
    g.add_argument("--seq_length_single", type=int, default=None, help="CoLA, SST-2")
    g.add_argument("--seq_length_pair", type=int, default=None, help="MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI")
    g.add_argument("--seq_length_squad", type=int, default=None, help="SQuAD window length")
    g.add_argument("--doc_stride", type=int, default=None, help="SQuAD: tokens between window starts")
    g.add_argument("--select_best_epoch", action="store_true",
                   help="score every epoch and report the best (optimistic: chosen on the scored set); "
                        "default: score the last epoch once")
    g.add_argument("--report_steps", type=int, default=0, help="progress line every N steps; 0: about 5 per cell")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    g.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    g.add_argument("--output_dir", default="runs/benchmark_glue", help="results.json, results.md and the finished cells")
    g.add_argument("--rerun", action="store_true", help="recompute every cell, even finished ones")
    return p


# ---------------------------------------------------------------- flags -> settings and models
def _task_counts(items, flag):
    out = {}
    for item in items:
        task, sep, n = item.partition("=")
        if not sep or not n.strip().isdigit():
            raise UserError(f"{flag} {item}: expected TASK=N with N a whole number, e.g. {flag} SST-2=4000")
        out[suite.find_task(task).name] = int(n)
    return out


def settings_from(args):
    preset = PRESETS[args.preset]

    def pick(name):
        value = getattr(args, name)
        return preset[name] if value is None else value

    seq = {"single": args.seq_length_single, "pair": args.seq_length_pair, "squad": args.seq_length_squad}
    settings = suite.Settings(
        max_train_examples=pick("max_train_examples"), max_eval_examples=pick("max_eval_examples"),
        caps={**preset["caps"], **_task_counts(args.cap, "--cap")},
        eval_caps={**preset["eval_caps"], **_task_counts(args.eval_cap, "--eval_cap")},
        epochs_num=pick("epochs_num"), batch_size=pick("batch_size"), learning_rate=args.learning_rate,
        warmup=args.warmup, seq_length={k: v or preset["seq_length"][k] for k, v in seq.items()},
        doc_stride=pick("doc_stride"), dev_split=args.dev_split, select_best_epoch=args.select_best_epoch,
        bf16=args.bf16, device=pick_device(args.device), report_steps=args.report_steps)
    seeds = pick("seeds")
    checks = {"--epochs_num": settings.epochs_num, "--batch_size": settings.batch_size,
              "--doc_stride": settings.doc_stride, **{f"--seq_length_{k}": v for k, v in settings.seq_length.items()}}
    for flag, value in checks.items():
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    for flag, value in {"--max_train_examples": settings.max_train_examples,
                        "--max_eval_examples": settings.max_eval_examples, "--report_steps": args.report_steps}.items():
        if value < 0:
            raise UserError(f"{flag} must be 0 (no limit) or more, got {value}")
    if not 0.0 <= settings.warmup <= 1.0:
        raise UserError(f"--warmup is a fraction of the steps in [0, 1], got {settings.warmup}")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds lists a seed twice: {' '.join(map(str, seeds))}")
    return settings, seeds


def model_specs(args):
    """ModelSpecs from --model, or from --pretrained_model_path / --config_path / --name; files checked."""
    raw = []
    for item in args.model:
        name, sep, rest = item.partition("=")
        if not sep:
            raise UserError(f"--model {item}: expected NAME=PATH[:CONFIG], e.g. --model wid=runs/wid.bin")
        path, config = rest, None
        head, colon, tail = rest.rpartition(":")
        if colon and tail.endswith((".json", ".yaml", ".yml")):
            path, config = head, tail
        raw.append((name, path or None, config, f"--model {item}"))
    if args.pretrained_model_path or args.config_path:
        if args.model:
            raise UserError("pass models either with --model or with --pretrained_model_path/--config_path, not both")
        path = args.pretrained_model_path
        name = args.name or (os.path.splitext(os.path.basename(path))[0] if path else "random_init")
        raw.append((name, path, args.config_path, "--pretrained_model_path"))
    if not raw:
        raise UserError("no model to benchmark: pass --pretrained_model_path (with --config_path unless "
                        "<stem>_config.json is beside it), or --model NAME=PATH[:CONFIG] once per model")
    specs, names = [], set()
    for name, path, config, where in raw:
        if not MODEL_NAME.match(name):
            raise UserError(f"{where}: model name '{name}' may hold only letters, digits and . _ + -")
        if name in names:
            raise UserError(f"{where}: model name '{name}' is used twice; give each model its own name")
        names.add(name)
        path = resolve(path)
        if path and not os.path.isfile(path):
            raise UserError(f"{where}: model file not found: {path}")
        config = resolve(config) or (config_path_beside(path) if path else None)
        if config is None:
            raise UserError(f"{where}: a randomly initialised model needs a config (NAME=:CONFIG or --config_path)")
        if not os.path.isfile(config):
            raise UserError(f"{where}: model config not found: {config} (pass it as NAME=PATH:CONFIG or --config_path)")
        specs.append(suite.ModelSpec(name, path, config))
    return specs


# ---------------------------------------------------------------- the run
class Progress:
    """Cell counter and a suite ETA from the cells measured so far (per task where known)."""

    def __init__(self, total):
        self.total, self.done, self.seconds = total, 0, collections.defaultdict(list)

    def tick(self, task, seconds=None):
        self.done += 1
        if seconds is not None:
            self.seconds[task].append(seconds)

    def eta(self, remaining_tasks):
        known = [s for v in self.seconds.values() for s in v]
        if not known:
            return "ETA unknown"
        overall = statistics.mean(known)
        left = sum(statistics.mean(self.seconds[t]) if self.seconds[t] else overall for t in remaining_tasks)
        return f"suite ETA {format_duration(left, compact=True)}"


def _log(msg):
    print(msg, flush=True)


def main(argv=None):
    start = time.time()
    args = build_parser().parse_args(argv)
    settings, seeds = settings_from(args)
    models = model_specs(args)
    tasks = [suite.find_task(t) for t in dict.fromkeys(args.tasks)]
    squad_train = args.squad_train_path or os.path.join(args.squad_dir, "dev-v1.1.json")
    squad_eval = args.squad_eval_path or os.path.join(args.squad_dir, "dev-v1.1.part2.json")
    notes = []
    sources = suite.find_sources(tasks, args.glue_dir, squad_train, squad_eval, settings.dev_split,
                                 log=lambda m: (notes.append(m), _log(m)))
    if not sources:
        _log(f"nothing to benchmark: none of {', '.join(t.name for t in tasks)} has its data in {args.glue_dir} "
             f"or {args.squad_dir}; nothing written")
        return 0
    tokenizer = build_tokenizer(args.tokenizer, vocab_path=resolve(args.vocab_path),
                                spm_model_path=resolve(args.spm_model_path), do_lower_case=args.do_lower_case)
    families = {suite.TASKS[t].family for t in sources}
    for model in models:
        model.load(tokenizer, {f: settings.seq_length[f] for f in families})
    order = [(t, m, s) for t in sources for m in models for s in seeds]
    _log(f"benchmark: {len(models)} model(s) x {len(sources)} task(s) ({', '.join(sources)}) x {len(seeds)} seed(s) "
         f"= {len(order)} cells, preset {args.preset}, device {settings.device}, {torch.get_num_threads()} threads; "
         f"results in {args.output_dir}")
    cells = {m.name: {t: {} for t in sources} for m in models}
    progress = Progress(len(order))
    context = dict(args=args, settings=settings, seeds=seeds, models=models, notes=notes, start=start,
                   squad=(squad_train, squad_eval))
    for task_name in sources:
        data = suite.load_task_data(suite.TASKS[task_name], sources[task_name], settings, tokenizer,
                                    os.path.join(args.output_dir, "data"), log=_log)
        for model in models:
            for seed in seeds:
                _one_cell(model, data, settings, seed, args, cells, progress, order)
                write_results(cells, finished=False, **context)
    write_results(cells, finished=True, **context)
    _log(f"done in {format_duration(time.time() - start, compact=True)}: "
         f"{os.path.join(args.output_dir, 'results.md')}")
    return 0


def _one_cell(model, data, settings, seed, args, cells, progress, order):
    task = data.spec.name
    label = f"[{progress.done + 1}/{progress.total}] {model.name} · {task} · seed {seed}"
    path = suite.cell_path(args.output_dir, model.name, task, seed)
    fingerprint = suite.cell_fingerprint(model, data, settings, seed)
    cell = None if args.rerun else suite.read_cell(path, fingerprint)
    if cell is not None:
        progress.tick(task)
        _log(f"{label}: done already ({path}), skipped")
    else:
        _log(f"{label}: {data.n_train} training, {data.n_eval} evaluation examples")
        cell = suite.run_cell(model, data, settings, seed, log=lambda m: _log(f"  {m}"))
        suite.save_cell(path, cell, fingerprint)
        progress.tick(task, cell["wall_s"])
        shown = " ".join(f"{k} {cell['metrics'][k]:.2f}" for k in data.spec.shown)
        remaining = [t for t, _, _ in order[progress.done:]]
        _log(f"{label}: {shown} (score {cell['score']:.2f}) in {format_duration(cell['wall_s'], compact=True)}; "
             f"{progress.eta(remaining)}")
    cells[model.name][task][seed] = cell


def write_results(cells, args, settings, seeds, models, notes, start, squad, finished):
    """results.json and results.md from the cells so far (rewritten after every cell)."""
    results = {"settings": {"preset": args.preset, "seeds": seeds, **dataclasses.asdict(settings),
                            "glue_dir": args.glue_dir, "squad_train_path": squad[0], "squad_eval_path": squad[1],
                            "vocab_path": args.vocab_path, "threads": torch.get_num_threads(),
                            "torch": torch.__version__, "command": " ".join(sys.argv)},
               "models": {}, "skipped": notes, "finished": finished, "wall_s": time.time() - start}
    for model in models:
        summary = model_summary({t: dict(by_seed) for t, by_seed in cells[model.name].items()})
        results["models"][model.name] = {"pretrained_model_path": model.path, "config_path": model.config_path,
                                         **summary}
    write_json(os.path.join(args.output_dir, "results.json"), results, ensure_ascii=False)
    with atomic_write(os.path.join(args.output_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(markdown_table(results))
    return results
