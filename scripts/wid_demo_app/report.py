"""The demo's outputs: results.json (every number), results.md (the README table) and wid_plot.png
(training loss and kept widths over WID), read back from the run directory's files and logs."""
import dataclasses
import json
import os
import re
import shutil
import statistics

from .files import read_json

LABELS = {"teacher": "teacher (adapted)", "wid": "WID student", "random": "baseline: random init",
          "pruned": "baseline: magnitude-pruned teacher"}


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
            "label": LABELS[name], "model_path": os.path.relpath(model_path, demo.run_dir),
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
    return {"preset": dataclasses.asdict(p), "models": models, "extras": extras,
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
    rows = ["| model | shape (hidden / heads / FFN / layers) | parameters | CPU latency b=1 | CPU latency b=32 "
            "| MLM acc (held out) | sentiment test acc |", "|---|---|---|---|---|---|---|"]
    teacher_params = results["models"]["teacher"]["params"]
    nan = float("nan")
    for name, m in results["models"].items():
        s, lat = m["shape"], m["latency_ms"]
        ratio = "" if name == "teacher" else f" ({m['params'] / teacher_params:.0%})"
        rows.append(f"| {m['label']} | {s['hidden_size']} / {s['heads_num']} / {s['feedforward_size']} / "
                    f"{s['layers_num']} | {m['params'] / 1e6:.1f}M{ratio} | {lat.get('1', nan):.1f} ms | "
                    f"{lat.get('32', nan):.0f} ms | {100 * m['mlm_acc']:.1f}% | {_sentiment_cell(m)} |")
    seeds = len(next(iter(results["models"].values()))["sentiment_test_acc"])
    lat = results["latency"]
    notes = [f"Parameters: embeddings + encoder (what a fine-tuned model keeps; the MLM head is not counted). "
             f"Latency: median of {lat.get('repeats')} encoder forwards at sequence length {lat.get('seq_length')}, "
             f"torch.inference_mode, {lat.get('threads')} threads. MLM accuracy: {results['eval']['predictions']} "
             f"masked tokens of the held-out chapters, the same masks for every model. Sentiment: test accuracy "
             f"(%), mean ± standard deviation over {seeds} fine-tuning seed(s)"
             + (f", at the learning rate (of {', '.join(f'{lr:g}' for lr in results['preset']['finetune_lrs'])}) with "
                f"the best mean dev accuracy." if len(results["preset"]["finetune_lrs"]) > 1 else ".")]
    ex = results["extras"]
    if "frozen_encoder_head_mlm_acc" in ex:
        notes.append(f"An MLM head trained on the frozen teacher encoder reaches "
                     f"{100 * ex['frozen_encoder_head_mlm_acc']:.1f}%.")
    if "pruned_before_training_mlm_acc" in ex:
        notes.append(f"The magnitude-pruned teacher before its training steps: "
                     f"{100 * ex['pruned_before_training_mlm_acc']:.1f}%.")
    return "\n".join(rows) + "\n\n" + " ".join(notes)


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
    """Copy the small artefacts (results.json, results.md, wid_plot.png) to `dest`."""
    os.makedirs(dest, exist_ok=True)
    copied = []
    for name in ("results.json", "results.md", "wid_plot.png"):
        src = os.path.join(run_dir, name)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(dest, name))
            copied.append(os.path.join(dest, name))
    return copied
