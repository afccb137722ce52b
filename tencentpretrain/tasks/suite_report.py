"""The benchmark's cells (tasks/suite.py) summed up: per task and seed, mean and spread, the GLUE average,
and the Markdown table (one row per model, one column per task).

Scores are percentages. A task's score is the mean of its `score` metrics: MRPC and QQP (F1 + accuracy) / 2,
STS-B (Pearson + Spearman) / 2, MNLI (matched + mismatched accuracy) / 2, the others their one metric;
SQuAD scores F1. The GLUE average is the unweighted mean of the GLUE tasks' scores, as in the GLUE paper.
Spreads are sample standard deviations over seeds (0 for one seed).
"""
import os
import statistics

from tencentpretrain.tasks.suite import GLUE_TASKS, TASKS

METRIC_NAMES = {"mcc": "MCC", "acc": "acc", "f1": "F1", "pearson": "Pearson", "spearman": "Spearman",
                "acc_mm": "acc-mm", "exact_match": "EM"}


def mean_std(values):
    values = list(values)
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def task_summary(cells):
    """{seed: cell} of one model and task -> per-seed results, mean and std of each metric and the score."""
    seeds = {str(seed): {k: cell[k] for k in ("metrics", "score", "epoch", "wall_s")} for seed, cell in cells.items()}
    names = list(next(iter(cells.values()))["metrics"]) + ["score"]
    stats = {name: mean_std(c["metrics"][name] if name != "score" else c["score"] for c in cells.values())
             for name in names}
    first = next(iter(cells.values()))
    return {"seeds": seeds, "mean": {k: m for k, (m, _) in stats.items()}, "std": {k: s for k, (_, s) in stats.items()},
            "train_examples": first["train_examples"], "eval_examples": first["eval_examples"],
            "note": first.get("note")}


def glue_average(task_scores):
    """The GLUE average of {task: score}: the unweighted mean over the GLUE tasks among them (None if none)."""
    scores = [score for task, score in task_scores.items() if task in GLUE_TASKS]
    return sum(scores) / len(scores) if scores else None


def model_summary(cells):
    """{task: {seed: cell}} of one model -> its tasks' summaries and GLUE average (mean, spread over seeds)."""
    tasks = {task: task_summary(by_seed) for task, by_seed in cells.items() if by_seed}
    glue = [t for t in tasks if t in GLUE_TASKS]
    out = {"tasks": tasks, "wall_s": sum(c["wall_s"] for by_seed in cells.values() for c in by_seed.values())}
    params = [c["backbone_parameters"] for by_seed in cells.values() for c in by_seed.values()]
    out["backbone_parameters"] = params[0] if params else None
    if glue:
        common = set.intersection(*(set(tasks[t]["seeds"]) for t in glue))
        per_seed = {s: glue_average({t: tasks[t]["seeds"][s]["score"] for t in glue}) for s in sorted(common)}
        spread = mean_std(per_seed.values())[1] if per_seed else None
        out["glue_average"] = {"mean": glue_average({t: tasks[t]["mean"]["score"] for t in glue}),
                               "std": spread, "tasks": glue, "per_seed": per_seed}
    return out


def column_tasks(results):
    """The tasks any model has, in GLUE's order then SQuAD."""
    present = {t for m in results["models"].values() for t in m["tasks"]}
    return [t for t in TASKS if t in present]


def _cell(summary, task):
    spec = TASKS[task]
    means = "/".join(f"{summary['mean'][k]:.1f}" for k in spec.shown)
    return f"{means} ± {summary['std']['score']:.1f}" if len(summary["seeds"]) > 1 else means


def markdown_table(results):
    """One row per model: parameters, each task (mean ± std over seeds), the GLUE average; then the footer."""
    tasks = column_tasks(results)
    glue = [t for t in tasks if t in GLUE_TASKS]
    daggers = {t for m in results["models"].values() for t, s in m["tasks"].items() if s.get("note")}
    title = {t: f"{t}{'†' if t in daggers else ''} ({'/'.join(METRIC_NAMES.get(k, k) for k in TASKS[t].shown)})"
             for t in tasks}
    head = ["model", "params"] + [title[t] for t in glue] + (["GLUE avg"] if glue else [])
    head += [title[t] for t in tasks if t not in glue]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    partial = False
    for name, m in results["models"].items():
        params = m.get("backbone_parameters")
        row = [name, f"{params / 1e6:.1f}M" if params else "-"]
        row += [_cell(m["tasks"][t], t) if t in m["tasks"] else "-" for t in glue]
        if glue:
            avg = m.get("glue_average")
            mark = "*" if avg and len(avg["tasks"]) < len(glue) else ""
            partial |= bool(mark)
            if avg is None:
                row.append("-")
            else:
                row.append(f"{avg['mean']:.1f}{mark}" + (f" ± {avg['std']:.1f}" if len(avg["per_seed"]) > 1 else ""))
        row += [_cell(m["tasks"][t], t) if t in m["tasks"] else "-" for t in tasks if t not in glue]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n\n" + footer(results, glue, daggers, partial) + "\n"


def footer(results, glue, daggers, partial):
    s = results["settings"]
    seeds = ", ".join(str(x) for x in s["seeds"])
    squad = [os.path.basename(s[k]) for k in ("squad_eval_path", "squad_train_path")]
    notes = [f"Scores in percent on held-out data (GLUE: dev sets; SQuAD v1.1: EM/F1 on {squad[0]}'s questions "
             f"after training on {squad[1]}'s), "
             + (f"the mean over seeds {seeds}; ± is the sample standard deviation over seeds of the task's score."
                if len(s["seeds"]) > 1 else f"one seed ({seeds})."),
             "Task score: the main metric; MRPC and QQP (F1 + acc) / 2, STS-B (Pearson + Spearman) / 2, "
             "MNLI (matched + mismatched acc) / 2, SQuAD F1."]
    if glue:
        notes.append(f"GLUE avg: the unweighted mean of the task scores of {', '.join(glue)} (the GLUE paper's "
                     "convention: tasks with two metrics count once, as the mean of the two); SQuAD is not part of it."
                     + (" *: over the tasks that row has." if partial else ""))
    for task in sorted(daggers, key=list(TASKS).index):
        note = next(m["tasks"][task]["note"] for m in results["models"].values() if task in m["tasks"])
        notes.append(f"†{task}: {note}.")
    notes.append(_run_note(s))
    return "\n".join(notes)


def _run_note(s):
    """The footer's line on caps, epochs, batch, learning rate and sequence lengths."""
    caps = f"train ≤ {s['max_train_examples'] or 'all'}, eval ≤ {s['max_eval_examples'] or 'all'} examples per task"
    own = {}
    for kind, task_caps in (("train", s["caps"]), ("eval", s["eval_caps"])):
        for task, n in task_caps.items():
            own.setdefault(task, []).append(f"{kind} ≤ {n or 'all'}")
    if own:
        caps += " (" + "; ".join(f"{t}: {', '.join(v)}" for t, v in sorted(own.items())) + ")"
    seq, epochs = s["seq_length"], s["epochs_num"]
    scored = "the best epoch on the scored set" if s["select_best_epoch"] else "the last epoch is scored"
    return (f"Preset {s['preset']}: {caps}; {epochs} epoch{'s' if epochs > 1 else ''}, batch {s['batch_size']}, "
            f"lr {s['learning_rate']:g}, sequence length {seq['single']} (single sentence) / {seq['pair']} (pairs) / "
            f"{seq['squad']} (SQuAD, stride {s['doc_stride']}); {scored}. params: embeddings + encoder.")
