"""Readers for the toolkit's task TSV format and shared text-file checks.

The TSV format is TencentPretrain's: a header naming the columns, then one example per
line, tab-separated, no quoting. Columns: `label` (an integer class id, or a float
score for regression; absent in unlabelled test files), `text_a`, optional `text_b`.
Other columns are ignored.
"""
import dataclasses
import os

from tencentpretrain.errors import UserError


@dataclasses.dataclass
class Example:
    text_a: str
    text_b: str | None = None
    label: int | float | None = None
    line: int = 0  # 1-based line in the source file, for error messages


def read_text_lines(path, what="file"):
    """All lines of a UTF-8 file (a BOM is dropped), with a clear error for a missing, empty or non-UTF-8 file."""
    if not path or not os.path.isfile(path):
        raise UserError(f"{what} '{path}' does not exist")
    with open(path, "rb") as f:
        data = f.read()
    if not data.strip():
        raise UserError(f"{what} '{path}' is empty")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline
    out = []
    for i, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{path}, line {i}: not valid UTF-8 (byte {raw[err.start]:#04x} at column "
                            f"{err.start + 1}); re-encode the file as UTF-8") from None
        if i == 1 and text.startswith("\ufeff"):
            text = text[1:]
        out.append(text.rstrip("\r"))
    return out


def read_tsv(path, task="classification", require_label=True):
    """Read a task TSV into Examples.

    task: "classification" (integer labels) or "regression" (float labels).
    require_label=False accepts files without a `label` column (test files for inference).
    """
    lines = read_text_lines(path, "TSV file")
    header = lines[0].split("\t")
    columns = {name.strip(): i for i, name in enumerate(header)}
    if "text_a" not in columns:
        raise UserError(f"{path}, line 1: the header has no 'text_a' column (found: {', '.join(header)}); "
                        "the first line must name the columns, e.g. 'label<TAB>text_a[<TAB>text_b]' "
                        "(convert official GLUE files with scripts/glue_to_tsv.py)")
    if require_label and "label" not in columns:
        raise UserError(f"{path}, line 1: the header has no 'label' column (found: {', '.join(header)})")
    i_a, i_b, i_label = columns["text_a"], columns.get("text_b"), columns.get("label")
    examples = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise UserError(f"{path}, line {n}: {len(fields)} tab-separated fields but the header has "
                            f"{len(header)}; a text may contain a stray tab or a field is missing")
        label = None
        if i_label is not None:
            label = _parse_label(fields[i_label], task, path, n)
        examples.append(Example(fields[i_a], fields[i_b] if i_b is not None else None, label, n))
    if not examples:
        raise UserError(f"TSV file '{path}' has a header but no examples")
    return examples


def _parse_label(value, task, path, line):
    value = value.strip()
    try:
        if task == "regression":
            return float(value)
        return int(value)
    except ValueError:
        kind = "a number" if task == "regression" else "an integer class id (0, 1, ...)"
        raise UserError(f"{path}, line {line}: unknown label '{value}'; labels must be {kind}. "
                        "Convert GLUE label strings with scripts/glue_to_tsv.py") from None


def infer_labels_num(examples, path):
    labels = [ex.label for ex in examples]
    if min(labels) < 0:
        bad = next(ex for ex in examples if ex.label < 0)
        raise UserError(f"{path}, line {bad.line}: label {bad.label} is negative; class ids start at 0")
    return max(labels) + 1


def check_labels(examples, labels_num, path):
    """Every label must be a class id below labels_num."""
    for ex in examples:
        if ex.label is not None and not 0 <= ex.label < labels_num:
            raise UserError(f"{path}, line {ex.line}: label {ex.label} is out of range for {labels_num} "
                            f"labels (0..{labels_num - 1}); pass --labels_num or fix the file")
