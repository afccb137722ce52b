"""Readers for the toolkit's task TSV format and shared text-file checks.

The TSV format is TencentPretrain's: a header naming the columns, then one example per
line, tab-separated, no quoting. Columns: `label` (an integer class id, or a float
score for regression; absent in unlabelled test files), `text_a`, optional `text_b`.
Other columns are ignored.
"""
import dataclasses
import math
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
    rows = read_tsv_rows(path, ("text_a", "label") if require_label else ("text_a",),
                         example="'label<TAB>text_a[<TAB>text_b]' (convert official GLUE files with "
                                 "scripts/glue_to_tsv.py)")
    return [Example(row["text_a"], row.get("text_b"),
                    _parse_label(row["label"], task, path, n) if "label" in row else None, n)
            for n, row in rows]


def _parse_label(value, task, path, line):
    value = value.strip()
    try:
        label = float(value) if task == "regression" else int(value)
    except ValueError:
        kind = "a number" if task == "regression" else "an integer class id (0, 1, ...)"
        raise UserError(f"{path}, line {line}: unknown label '{value}'; labels must be {kind}. "
                        "Convert GLUE label strings with scripts/glue_to_tsv.py") from None
    if not math.isfinite(label):  # a nan or inf score trains (or scores) nothing but nan
        raise UserError(f"{path}, line {line}: label '{value}' is not a finite number; regression scores "
                        "must be finite: fix or drop the line")
    return label


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


def example_labels(ex):
    """The labels of one example as a list: [label], or [] when unlabelled."""
    return [] if ex.label is None else [ex.label]


def label_warning(examples, path, allowed, why, effect, labels_of=example_labels):
    """A `warning: ...` line counting the examples of `path` with a label not in `allowed`, or None.

    For labels a model is scored on but (almost) never predicts: a dev class absent from the
    training file, a test label outside a fine-tuned head. `why` and `effect` complete the line
    ("labels never seen in training (train.tsv)", "... count as errors"); `labels_of` lists an
    example's labels (its tags for NER).
    """
    bad = [(ex.line, label) for ex in examples for label in labels_of(ex) if label not in allowed]
    if not bad:
        return None
    lines = sorted({line for line, _ in bad})
    shown = ", ".join(str(n) for n in lines[:5]) + (", ..." if len(lines) > 5 else "")
    values = ", ".join(str(v) for v in sorted({label for _, label in bad}, key=str)[:8])
    return (f"warning: {path}: {len(lines)} of {len(examples)} examples (lines {shown}) have {why}: "
            f"{values}; {effect}")


def read_tsv_rows(path, required=("text_a",), what="TSV file", example=None):
    """(line number, {column: field}) for each non-blank example line of a headed TSV file.

    Every task's TSV reader starts here. `required` names the columns the header must have
    (`example`, a header to show when one is missing, defaults to them); a row with the wrong
    number of fields is an error naming its line.
    """
    lines = read_text_lines(path, what)
    header = [name.strip() for name in lines[0].split("\t")]
    example = example or f"'{'<TAB>'.join(required)}'"
    for name in required:
        if name not in header:
            raise UserError(f"{path}, line 1: the header has no '{name}' column (found: {', '.join(header)}); "
                            f"the first line must name the columns, e.g. {example}")
    rows = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise UserError(f"{path}, line {n}: {len(fields)} tab-separated fields but the header has "
                            f"{len(header)}; a text may contain a stray tab or a field is missing")
        rows.append((n, dict(zip(header, fields))))
    if not rows:
        raise UserError(f"{what} '{path}' has a header but no examples")
    return rows


# ---------------------------------------------------------------- multi-label and NER (token tagging)
def read_multi_label_tsv(path, require_label=True):
    """Multi-label TSV (TencentPretrain's run_classifier_multi_label.py): `label` holds comma-separated
    class ids, e.g. `0,3`; `text_a`, optional `text_b`. Example.label is a sorted tuple of ids."""
    rows = read_tsv_rows(path, ("label", "text_a") if require_label else ("text_a",))
    examples = []
    for n, row in rows:
        label = None
        if "label" in row:
            try:
                label = tuple(sorted({int(x) for x in row["label"].split(",")}))
            except ValueError:
                raise UserError(f"{path}, line {n}: bad label '{row['label']}'; a multi-label label is one or "
                                "more integer class ids separated by commas, e.g. '0,3'") from None
            if label[0] < 0:
                raise UserError(f"{path}, line {n}: label {label[0]} is negative; class ids start at 0")
        examples.append(Example(row["text_a"], row.get("text_b"), label, n))
    return examples


@dataclasses.dataclass
class TaggedExample:
    """One NER line: whitespace-separated tokens and, when labelled, one tag per token."""
    tokens: list
    labels: list | None = None
    line: int = 0


def read_ner_tsv(path, label2id=None, require_label=True):
    """NER TSV (TencentPretrain's run_ner.py): `text_a` holds space-separated tokens (characters for
    Chinese), `label` as many space-separated tags (BIO), e.g. `B-LOC I-LOC O`. Tags must be keys of
    `label2id` when it is given."""
    rows = read_tsv_rows(path, ("text_a", "label") if require_label else ("text_a",))
    examples = []
    for n, row in rows:
        tokens = row["text_a"].split()
        if not tokens:
            raise UserError(f"{path}, line {n}: text_a is empty; every line needs at least one token")
        labels = None
        if "label" in row:
            labels = row["label"].split()
            if len(labels) != len(tokens):
                raise UserError(f"{path}, line {n}: {len(tokens)} tokens in text_a but {len(labels)} tags in "
                                "label; separate both by spaces, one tag per token")
            unknown = [t for t in labels if label2id is not None and t not in label2id]
            if unknown:
                raise UserError(f"{path}, line {n}: tag '{unknown[0]}' is not in --label2id_path "
                                f"(known: {', '.join(label2id)}); add it there or fix the file")
        examples.append(TaggedExample(tokens, labels, n))
    return examples


def read_label2id(path):
    """A label2id JSON ({"O": 0, "B-LOC": 1, ...}) checked to number its tags 0..n-1 exactly once."""
    import json
    text = "\n".join(read_text_lines(path, "label2id file"))
    try:
        l2i = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err}); expected e.g. {{\"O\": 0, \"B-LOC\": 1}}") from None
    if not isinstance(l2i, dict) or not l2i or not all(isinstance(v, int) and not isinstance(v, bool)
                                                       for v in l2i.values()):
        raise UserError(f"{path}: expected a JSON object mapping each tag to an integer id, "
                        "e.g. {\"O\": 0, \"B-LOC\": 1}")
    if sorted(l2i.values()) != list(range(len(l2i))):
        raise UserError(f"{path}: the ids must be 0..{len(l2i) - 1}, each used once (found "
                        f"{sorted(l2i.values())})")
    if "[PAD]" in l2i:
        raise UserError(f"{path}: '[PAD]' is reserved (the padding class is added after the tags); remove it")
    return l2i
