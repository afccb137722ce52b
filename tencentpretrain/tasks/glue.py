"""Official GLUE task files -> the toolkit's TSV (`label<TAB>text_a[<TAB>text_b]`).

Each task keeps its own columns and label strings; this table says where they are.
Label strings become class ids in the order below (Hugging Face's `glue` order), and
the mapping is written next to the converted files as labels.json.
"""
import dataclasses
import json
import math
import os

from tencentpretrain.errors import UserError
from tencentpretrain.tasks.readers import read_text_lines
from tencentpretrain.utils.io import atomic_write


@dataclasses.dataclass(frozen=True)
class GlueTask:
    name: str
    text_a: str
    text_b: str | None
    label: str
    labels: tuple | None  # label strings in class-id order; None = a float score (regression)
    files: tuple = ("train.tsv", "dev.tsv", "test.tsv")
    headerless: tuple | None = None  # (label column, text_a column) of header-less files (CoLA train/dev)


_NLI = ("entailment", "not_entailment")
TASKS = {t.name: t for t in (
    GlueTask("CoLA", "sentence", None, "label", ("0", "1"), headerless=(1, 3)),
    GlueTask("SST-2", "sentence", None, "label", ("0", "1")),
    GlueTask("MRPC", "#1 String", "#2 String", "Quality", ("0", "1")),
    GlueTask("STS-B", "sentence1", "sentence2", "score", None),
    GlueTask("QQP", "question1", "question2", "is_duplicate", ("0", "1")),
    GlueTask("MNLI", "sentence1", "sentence2", "gold_label", ("entailment", "neutral", "contradiction"),
             files=("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv", "test_matched.tsv",
                    "test_mismatched.tsv")),
    GlueTask("QNLI", "question", "sentence", "label", _NLI),
    GlueTask("RTE", "sentence1", "sentence2", "label", _NLI),
    GlueTask("WNLI", "sentence1", "sentence2", "label", ("0", "1")),
)}


def get_task(name):
    key = name.replace("-", "").lower()
    for task in TASKS.values():
        if task.name.replace("-", "").lower() == key:
            return task
    raise UserError(f"unknown GLUE task '{name}'; choose one of: {', '.join(TASKS)} (or 'all')")


def convert_file(task, in_path, out_path, skip_bad_rows=False):
    """Convert one file; returns (rows written, rows skipped, has_labels)."""
    lines = read_text_lines(in_path, "GLUE file")
    first = lines[0].split("\t")
    if task.headerless and task.text_a not in first:
        header, body, start = None, lines, 1
        n_cols, label_i, a_i, b_i = len(first), task.headerless[0], task.headerless[1], None
        if n_cols <= max(label_i, a_i):
            raise UserError(f"{in_path}, line 1: no '{task.text_a}' header, and {n_cols} fields are too few for "
                            f"{task.name}'s header-less layout (label in column {label_i + 1}, text in column "
                            f"{a_i + 1}); is this the right task?")
    else:
        header, body, start = first, lines[1:], 2
        cols = {c.strip(): i for i, c in enumerate(header)}
        for needed in (task.text_a, task.text_b):
            if needed and needed not in cols:
                raise UserError(f"{in_path}, line 1: no '{needed}' column for {task.name} "
                                f"(found: {', '.join(header)}); is this the right task?")
        n_cols, label_i = len(header), cols.get(task.label)
        a_i, b_i = cols[task.text_a], cols.get(task.text_b) if task.text_b else None
    out_header = (["label"] if label_i is not None else []) + ["text_a"] + (["text_b"] if b_i is not None else [])
    rows, skipped = [], 0
    for n, line in enumerate(body, start):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != n_cols:
            if skip_bad_rows:
                skipped += 1
                continue
            raise UserError(f"{in_path}, line {n}: {len(fields)} fields, expected {n_cols}; "
                            "pass --skip_bad_rows to drop such rows")
        row = [fields[a_i]] + ([fields[b_i]] if b_i is not None else [])
        if label_i is not None:
            row.insert(0, _label(task, fields[label_i].strip(), in_path, n))
        rows.append("\t".join(row))
    with atomic_write(out_path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(out_header) + "\n")
        f.writelines(r + "\n" for r in rows)
    return len(rows), skipped, label_i is not None


def _label(task, value, path, line):
    if task.labels is None:
        try:
            score = float(value)
        except ValueError:
            raise UserError(f"{path}, line {line}: score '{value}' is not a number") from None
        if not math.isfinite(score):
            raise UserError(f"{path}, line {line}: score '{value}' is not a finite number; fix or drop the line")
        return repr(score)
    if value not in task.labels:
        raise UserError(f"{path}, line {line}: unknown {task.name} label '{value}'; "
                        f"expected one of: {', '.join(task.labels)}")
    return str(task.labels.index(value))


def convert_task(task, in_dir, out_dir, skip_bad_rows=False, log=print):
    """Convert every official file of `task` found in in_dir; returns the names converted."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--output_dir {out_dir} is a file; give a folder (it is created when missing)")
    done = []
    for name in task.files:
        in_path = os.path.join(in_dir, name)
        if not os.path.isfile(in_path):
            continue
        n, skipped, labelled = convert_file(task, in_path, os.path.join(out_dir, name), skip_bad_rows)
        note = f", {skipped} malformed rows skipped" if skipped else ""
        log(f"{task.name} {name}: {n} rows{'' if labelled else ' (no labels)'}{note} -> {os.path.join(out_dir, name)}")
        done.append(name)
    if not done:
        raise UserError(f"no {task.name} files ({', '.join(task.files)}) found in '{in_dir}'")
    mapping = {"task": task.name, "regression": task.labels is None}
    if task.labels is not None:
        mapping["labels"] = {str(i): name for i, name in enumerate(task.labels)}
    with atomic_write(os.path.join(out_dir, "labels.json"), "w", encoding="utf-8") as f:
        json.dump(mapping, f, indent=2)
    return done


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Guide: docs/finetuning.md",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--task", required=True, help=f"one of {', '.join(TASKS)}, or 'all' "
                        "(then --input_dir holds one folder per task, named as GLUE names them)")
    parser.add_argument("--input_dir", required=True, help="folder with the task's official .tsv files")
    parser.add_argument("--output_dir", required=True, help="where the TSV files (and labels.json) are written")
    parser.add_argument("--skip_bad_rows", action="store_true", help="drop rows with a wrong number of fields")
    args = parser.parse_args(argv)
    if args.task.lower() == "all":
        found = [t for t in TASKS.values() if os.path.isdir(os.path.join(args.input_dir, t.name))]
        if not found:
            raise UserError(f"no GLUE task folders ({', '.join(TASKS)}) in '{args.input_dir}'")
        for task in found:
            convert_task(task, os.path.join(args.input_dir, task.name), os.path.join(args.output_dir, task.name),
                         args.skip_bad_rows)
    else:
        convert_task(get_task(args.task), args.input_dir, args.output_dir, args.skip_bad_rows)
    return 0
