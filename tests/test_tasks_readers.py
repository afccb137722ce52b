"""The task TSV reader: the format, and a clear error (file, line, what to do) for each bad input."""
import pytest

from tencentpretrain.errors import UserError
from tencentpretrain.tasks.readers import check_labels, infer_labels_num, read_tsv


def write(tmp_path, data, name="f.tsv"):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return str(path)


def test_single_and_pair_and_extra_columns(tmp_path):
    ex = read_tsv(write(tmp_path, "label\ttext_a\n1\tgood\n0\tbad\n"))
    assert [(e.label, e.text_a, e.text_b, e.line) for e in ex] == [(1, "good", None, 2), (0, "bad", None, 3)]
    # any column order, extra columns ignored, BOM and CRLF tolerated, blank lines skipped
    ex = read_tsv(write(tmp_path, "\ufeffid\ttext_b\ttext_a\tlabel\r\n7\tB\tA\t2\r\n\n"))
    assert [(e.label, e.text_a, e.text_b) for e in ex] == [(2, "A", "B")]
    ex = read_tsv(write(tmp_path, "label\ttext_a\ttext_b\n4.25\tx\ty\n"), "regression")
    assert ex[0].label == 4.25
    ex = read_tsv(write(tmp_path, "text_a\nno label here\n"), require_label=False)
    assert ex[0].label is None


@pytest.mark.parametrize("data, message", [
    ("", "is empty"),
    ("\n\n", "is empty"),
    ("label\ttext_a\n", "no examples"),
    ("label\tsentence\n1\tx\n", "line 1: the header has no 'text_a' column"),
    ("text_a\ttext_b\nx\ty\n", "line 1: the header has no 'label' column"),
    ("label\ttext_a\n1\tok\n0\tstray\ttab\n", "line 3: 3 tab-separated fields but the header has 2"),
    ("label\ttext_a\ttext_b\n1\tonly a\n", "line 2: 2 tab-separated fields"),
    ("label\ttext_a\n1\tok\nentailment\tx\n", "line 3: unknown label 'entailment'"),
    (b"label\ttext_a\n1\tok\n0\tcaf\xe9\n", "line 3: not valid UTF-8 (byte 0xe9 at column 6)"),
])
def test_errors_name_file_and_line(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(UserError) as err:
        read_tsv(path)
    assert message in str(err.value) and path in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_tsv(str(tmp_path / "nope.tsv"))


def test_regression_label_must_be_number(tmp_path):
    with pytest.raises(UserError, match="line 2: unknown label 'high'; labels must be a number"):
        read_tsv(write(tmp_path, "label\ttext_a\nhigh\tx\n"), "regression")


def test_labels_num_inferred_and_checked(tmp_path):
    path = write(tmp_path, "label\ttext_a\n0\ta\n2\tb\n1\tc\n")
    ex = read_tsv(path)
    assert infer_labels_num(ex, path) == 3
    check_labels(ex, 3, path)
    with pytest.raises(UserError, match=r"line 3: label 2 is out of range for 2 labels \(0..1\)"):
        check_labels(ex, 2, path)
    neg = read_tsv(write(tmp_path, "label\ttext_a\n-1\ta\n", "n.tsv"))
    with pytest.raises(UserError, match="line 2: label -1 is negative"):
        infer_labels_num(neg, "n.tsv")
