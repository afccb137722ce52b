"""The demo's outputs: results.json (every number), results.md (the README table) and wid_plot.png
(training loss and kept widths over WID), read back from the run directory's files and logs."""
import dataclasses
import json
import os
import re
import shutil
import statistics

from tencentpretrain.tasks.suite_report import _cell as task_cell

from .files import read_json

LABELS = {"teacher": "teacher (adapted)", "wid": "WID student", "random": "baseline: random init",
          "pruned": "baseline: magnitude-pruned teacher", "kd_distilbert": "KD: DistilBERT-style",
          "kd_tinybert": "KD: TinyBERT-style", "kd_minilm": "KD: MiniLM-style"}


def label(name):
    if name.endswith("_matched"):
        return f"{LABELS.get(name[:-len('_matched')], name)}, wall-clock-matched"
    return LABELS.get(name, name)


def training_seconds(demo, name):
    """The wall-clock cost of producing a student from the adapted teacher (its stages' recorded seconds)."""
    if name.endswith("_matched"):
        return read_json(demo.path("matched.json"))["seconds"]
    parts = {"wid": ("wid", "merge")}.get(name, (name,))
    seconds = [demo.stage_seconds.get(part) for part in parts]
    return None if None in seconds else sum(seconds)


def collect_results(demo):
    p = demo.preset
    latency = read_json(demo.path("latency.json")) if os.path.isfile(demo.path("latency.json")) else {"ms": {}}
    models = {}
    for name, (model_path, config_path) in demo.models().items():
        ev = read_json(demo.path("eval", f"{name}.json"))
        files = {lr: [demo.finetune_path(name, lr, seed) for seed in p.finetune_seeds] for lr in p.finetune_lrs}
        runs = {lr: [read_json(f) for f in fs if os.path.isfile(f)] for lr, fs in files.items()}
        runs = {lr: r for lr, r in runs.items() if r}
        # the learning rate is chosen on dev (mean over seeds), never on test
        best_lr = max(runs, key=lambda lr: statistics.mean(r["dev_acc"] for r in runs[lr])) if runs else None
        seeds = [r["test_acc"] for r in runs.get(best_lr, [])]
        cfg = read_json(config_path)
        models[name] = {
            "label": label(name), "model_path": os.path.relpath(model_path, demo.run_dir),
            "config_path": os.path.relpath(config_path, demo.run_dir),
            "shape": {k: cfg[k] for k in ("hidden_size", "heads_num", "feedforward_size", "layers_num")},
            "params": ev["params"], "params_with_mlm_head": ev["params_with_head"],
            "latency_ms": latency["ms"].get(name, {}), "mlm_acc": ev["mlm_acc"], "mlm_loss": ev["mlm_loss"],
            "sentiment_test_acc": seeds, "sentiment_lr": best_lr,
            "sentiment_by_lr": {f"{lr:g}": {k: [r[k] for r in rs] for k in ("dev_acc", "test_acc")}
                                for lr, rs in runs.items()},
            "sentiment_mean": statistics.mean(seeds) if seeds else None,
            "sentiment_std": statistics.stdev(seeds) if len(seeds) > 1 else 0.0 if seeds else None}
    extras = {}
    if os.path.isfile(demo.path("probe", "result.json")):
        extras["frozen_encoder_head_mlm_acc"] = read_json(demo.path("probe", "result.json"))["mlm_acc"]
    pruned_eval = demo.path("eval", "pruned_before_training.json")
    if os.path.isfile(pruned_eval):
        extras["pruned_before_training_mlm_acc"] = read_json(pruned_eval)["mlm_acc"]
    held_out = read_json(demo.path("eval", "teacher.json"))
    for name in models:
        if name != "teacher":
            models[name]["training_seconds"] = training_seconds(demo, name)
    comparison = {}
    for group in ("teacher", "students"):
        path = demo.path("glue", group, "results.json")
        if os.path.isfile(path):
            comparison[group] = read_json(path)
    for extra, path in (("matched", demo.path("matched.json")),
                        ("attention", demo.path("attention", "attention_divergence.json"))):
        if os.path.isfile(path):
            comparison[extra] = read_json(path)
    return {"preset": dataclasses.asdict(p), "models": models, "extras": extras, "comparison": comparison,
            "eval": {"predictions": held_out["predictions"], "instances": held_out["instances"],
                     "seed": held_out["seed"]},
            "latency": {k: v for k, v in latency.items() if k != "ms"},
            "stage_seconds": read_json(demo.path("stage_seconds.json"))
            if os.path.isfile(demo.path("stage_seconds.json")) else {}}


def _sentiment_cell(m):
    if m["sentiment_mean"] is None:
        return "-"
    cell = f"{100 * m['sentiment_mean']:.1f}"
    cell += f" ± {100 * m['sentiment_std']:.1f}" if len(m["sentiment_test_acc"]) > 1 else ""
    return cell + (f" (lr {m['sentiment_lr']:g})" if len(m["sentiment_by_lr"]) > 1 else "")


def results_table(results):
    """The README table (markdown) and its notes."""
    sentiment = bool(results["preset"]["finetune_seeds"])
    rows = ["| model | shape (hidden / heads / FFN / layers) | parameters | CPU latency b=1 | CPU latency b=32 "
            "| MLM acc (held out) |" + (" sentiment test acc |" if sentiment else ""),
            "|---|---|---|---|---|---|" + ("---|" if sentiment else "")]
    teacher_params = results["models"]["teacher"]["params"]
    nan = float("nan")
    for name, m in results["models"].items():
        s, lat = m["shape"], m["latency_ms"]
        ratio = "" if name == "teacher" else f" ({m['params'] / teacher_params:.0%})"
        rows.append(f"| {m['label']} | {s['hidden_size']} / {s['heads_num']} / {s['feedforward_size']} / "
                    f"{s['layers_num']} | {m['params'] / 1e6:.1f}M{ratio} | {lat.get('1', nan):.1f} ms | "
                    f"{lat.get('32', nan):.0f} ms | {100 * m['mlm_acc']:.1f}% |"
                    + (f" {_sentiment_cell(m)} |" if sentiment else ""))
    seeds = len(next(iter(results["models"].values()))["sentiment_test_acc"])
    lat = results["latency"]
    notes = [f"Parameters: embeddings + encoder (what a fine-tuned model keeps; the MLM head is not counted). "
             f"Latency: median of {lat.get('repeats')} encoder forwards at sequence length {lat.get('seq_length')}, "
             f"torch.inference_mode, {lat.get('threads')} threads. MLM accuracy: {results['eval']['predictions']} "
             f"masked tokens of the held-out chapters, the same masks for every model."
             + (f" Sentiment: test accuracy (%), mean ± standard deviation over {seeds} fine-tuning seed(s)"
                + (f", at the learning rate (of {', '.join(f'{lr:g}' for lr in results['preset']['finetune_lrs'])}) "
                   f"with the best mean dev accuracy." if len(results["preset"]["finetune_lrs"]) > 1 else ".")
                if sentiment else "")]
    ex = results["extras"]
    if "frozen_encoder_head_mlm_acc" in ex:
        notes.append(f"An MLM head trained on the frozen teacher encoder reaches "
                     f"{100 * ex['frozen_encoder_head_mlm_acc']:.1f}%.")
    if "pruned_before_training_mlm_acc" in ex:
        notes.append(f"The magnitude-pruned teacher before its training steps: "
                     f"{100 * ex['pruned_before_training_mlm_acc']:.1f}%.")
    return "\n".join(rows) + "\n\n" + " ".join(notes)


def comparison_table(results):
    """The GLUE/SQuAD comparison (markdown) when the glue stage ran, else None: one row per model with its
    tasks (mean ± std over seeds), GLUE average and its share of the teacher's, SQuAD, size, latency and the
    wall-clock its compression took."""
    from tencentpretrain.tasks.suite import GLUE_TASKS, TASKS
    from tencentpretrain.tasks.suite_report import column_tasks, footer
    comp = results.get("comparison", {})
    if "teacher" not in comp and "students" not in comp:
        return None
    glue = {name: m for group in ("teacher", "students") for name, m in comp.get(group, {}).get("models", {}).items()}
    tasks = column_tasks({"models": glue})
    glue_tasks = [t for t in tasks if t in GLUE_TASKS]
    teacher_avg = (glue.get("teacher", {}).get("glue_average") or {}).get("mean")
    head = (["model", "params"] + [f"{t} ({'/'.join(TASKS[t].shown)})" for t in glue_tasks]
            + ["GLUE avg", "% of teacher"] + [f"{t} (EM/F1)" for t in tasks if t not in glue_tasks]
            + ["latency b=32", "compression"])
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    nan = float("nan")
    for name, m in results["models"].items():
        g = glue.get(name, {"tasks": {}})
        cells = [m["label"], f"{m['params'] / 1e6:.1f}M"]
        cells += [_task_cell(g, t) for t in glue_tasks]
        if glue_tasks:
            avg = g.get("glue_average")
            cells.append("-" if not avg else f"**{avg['mean']:.1f}**" + (f" ± {avg['std']:.1f}" if len(avg["per_seed"]) > 1 else ""))
            cells.append("-" if not (avg and teacher_avg) else f"{100 * avg['mean'] / teacher_avg:.1f}%")
        cells += [_task_cell(g, t) for t in tasks if t not in glue_tasks]
        seconds = m.get("training_seconds")
        cells += [f"{m['latency_ms'].get('32', nan):.0f} ms", "-" if seconds is None else f"{seconds:.0f} s"]
        rows.append("| " + " | ".join(cells) + " |")
    some = comp.get("students") or comp.get("teacher")
    lrs = {g: comp[g]["settings"]["learning_rate"] for g in ("teacher", "students") if g in comp}
    notes = [footer(some, glue_tasks, set(), False),
             "Fine-tuning learning rate: " + ", ".join(f"{g} {lr:g}" for g, lr in lrs.items()) + ". "
             "compression: wall-clock seconds from the adapted teacher to the student (WID: compacted training + "
             f"merge; KD: teacher and student together; every method {results['preset']['wid_steps']} steps of "
             f"batch {results['preset']['batch_size']} x {results['preset']['seq_length']} tokens unless matched)."]
    if "matched" in comp:
        mt = comp["matched"]
        notes.append(f"Wall-clock-matched: the two best students at the same steps were {mt['best'][0]} and "
                     f"{mt['best'][1]}; {mt['method']} took {mt['seconds_at_same_steps'][mt['method']]:.0f} s, so it "
                     f"was trained again for {mt['steps']} steps to fill the other's "
                     f"{mt['budget_seconds']:.0f} s.")
    return "\n".join(rows) + "\n\n" + "\n".join(notes)


def _task_cell(glue_model, task):
    summary = glue_model["tasks"].get(task)
    return "-" if summary is None else task_cell(summary, task)


REPORT_LINE = re.compile(r"\|\s*step\s+(\d+)/\d+\s*\|\s*loss\s+([0-9.]+)")


def read_losses(log_path):
    """(steps, losses) from pretrain.py's report lines (the last run in the log wins per step)."""
    points = {}
    if os.path.isfile(log_path):
        with open(log_path, encoding="utf-8") as f:
            for line in f:
                m = REPORT_LINE.search(line)
                if m:
                    points[int(m.group(1))] = float(m.group(2))
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def read_widths(mask_log_path):
    """group kind -> [(step, mean kept width)], from WID's JSON-lines mask log."""
    kept, sizes = {0: {}}, {}
    with open(mask_log_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                kept.setdefault(r["step"], {})[r["group"]] = r["kept"]
                sizes[r["group"]] = r["size"]
    widths, current = {}, dict(sizes)
    for step in sorted(kept):
        current.update(kept[step])
        for kind, prefix in (("stream S", "S"), ("attention A (mean over layers)", "A."),
                             ("FFN F (mean over layers)", "F."), ("MLM head M", "M")):
            vals = [v for g, v in current.items() if g == prefix or (prefix.endswith(".") and g.startswith(prefix))]
            if vals:
                widths.setdefault(kind, []).append((step, sum(vals) / len(vals)))
    return widths


def plot_wid(mask_log_path, logs_dir, out_path, preset, schedule_steps=None):
    """Loss (WID and the baselines) and kept widths over WID training, with a dotted line at the last mask
    update (`schedule_steps`, when given); None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  matplotlib is not installed: no plot (pip install matplotlib)", flush=True)
        return None
    if not os.path.isfile(mask_log_path):
        print(f"  no mask log at {mask_log_path}: no plot", flush=True)
        return None
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for stage, label in (("wid", "WID"), ("random", "baseline: random init"), ("pruned", "baseline: pruned")):
        steps, losses = read_losses(os.path.join(logs_dir, f"{stage}.log"))
        if steps:
            ax1.plot(steps, losses, label=label)
    ax1.set_ylabel("MLM training loss")
    ax1.legend()
    ax1.grid(alpha=0.3)
    for kind, points in read_widths(mask_log_path).items():
        xs, ys = zip(*points)
        ax2.step([*xs, preset.wid_steps], [*ys, ys[-1]], where="post", label=kind)
    if schedule_steps is not None:
        ax2.axvline(schedule_steps, color="grey", ls=":", lw=1)
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("kept width")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(f"WID {preset.name} preset: teacher -> hidden {preset.target_hidden}, FFN {preset.target_ffn}")
    fig.tight_layout()
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path


def publish(run_dir, dest):
    """Copy the small artefacts (results.json, results.md, the plots) to `dest`."""
    os.makedirs(dest, exist_ok=True)
    copied = []
    for name in ("results.json", "results.md", "wid_plot.png", os.path.join("attention", "attention_divergence.png")):
        src = os.path.join(run_dir, name)
        if os.path.isfile(src):
            out = os.path.join(dest, os.path.basename(name))
            shutil.copyfile(src, out)
            copied.append(out)
    return copied
