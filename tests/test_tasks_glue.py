"""scripts/glue_to_tsv.py: every official GLUE task layout -> the toolkit TSV."""
import json
import os
import subprocess
import sys

import pytest

from tencentpretrain.errors import UserError
from tencentpretrain.resources import repo_root
from tencentpretrain.tasks import glue
from tencentpretrain.tasks.readers import read_tsv

SAMPLES = os.path.join(repo_root(), "datasets", "samples", "glue")


def lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("glue")
    assert glue.main(["--task", "all", "--input_dir", SAMPLES, "--output_dir", str(out)]) == 0
    return out


def test_every_task_converted(converted):
    assert sorted(os.listdir(converted)) == sorted(glue.TASKS)
    for task in glue.TASKS.values():
        for name in task.files:
            path = converted / task.name / name
            assert path.is_file(), path
            head = lines(path)[0]
            if name.startswith("test"):
                assert not head.startswith("label") and read_tsv(str(path), require_label=False)
            else:
                kind = "regression" if task.labels is None else "classification"
                assert head.startswith("label\ttext_a") and read_tsv(str(path), kind)


def test_cola_headerless_and_no_final_newline(converted):
    assert lines(converted / "CoLA" / "dev.tsv") == [
        "label\ttext_a", "1\tThe cat sat on the mat.", "0\tThe cat sat the mat on.",
        "1\tShe gave him a book.", "0\tShe him gave a book."]
    assert lines(converted / "CoLA" / "test.tsv") == ["text_a", "The dog barked loudly.", "Dog the loudly barked."]


def test_mrpc_bom_and_pairs(converted):
    out = lines(converted / "MRPC" / "train.tsv")
    assert out[0] == "label\ttext_a\ttext_b"
    assert out[3] == "1\tHe doesn't expect rain today.\tHe does not think it will rain today."
    assert lines(converted / "MRPC" / "test.tsv")[0] == "text_a\ttext_b"


def test_label_strings_and_scores(converted):
    assert [ln.split("\t")[0] for ln in lines(converted / "MNLI" / "train.tsv")[1:]] == ["0", "2", "1", "0", "2", "1"]
    assert [ln.split("\t")[0] for ln in lines(converted / "MNLI" / "dev_mismatched.tsv")[1:]] == ["0", "2", "1"]
    assert [ln.split("\t")[0] for ln in lines(converted / "RTE" / "train.tsv")[1:]] == ["0", "1", "0"]
    assert [ln.split("\t")[0] for ln in lines(converted / "STS-B" / "train.tsv")[1:]] == ["5.0", "3.8", "0.5", "2.25"]
    assert json.loads((converted / "MNLI" / "labels.json").read_text())["labels"] == {
        "0": "entailment", "1": "neutral", "2": "contradiction"}
    assert json.loads((converted / "STS-B" / "labels.json").read_text())["regression"] is True
    assert lines(converted / "SST-2" / "dev.tsv")[1] == "1\tthe soup was warm and the staff were kind . "


def test_bad_inputs(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(UserError, match="line 2: unknown RTE label 'maybe'; expected one of: entailment"):
        glue.main(["--task", "rte", "--input_dir", str(tmp_path / "RTE"), "--output_dir", str(tmp_path / "o")])
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\n1\ta\tb\tentailment\n")
    with pytest.raises(UserError, match="line 2: 3 fields, expected 4"):
        glue.main(["--task", "RTE", "--input_dir", str(tmp_path / "RTE"), "--output_dir", str(tmp_path / "o")])
    glue.main(["--task", "RTE", "--input_dir", str(tmp_path / "RTE"), "--output_dir", str(tmp_path / "o"),
               "--skip_bad_rows"])
    assert lines(tmp_path / "o" / "train.tsv") == ["label\ttext_a\ttext_b", "0\ta\tb"]
    with pytest.raises(UserError, match="no 'question' column for QNLI"):
        glue.main(["--task", "QNLI", "--input_dir", str(tmp_path / "RTE"), "--output_dir", str(tmp_path / "o")])
    with pytest.raises(UserError, match="no SST-2 files"):
        glue.main(["--task", "sst2", "--input_dir", str(tmp_path), "--output_dir", str(tmp_path / "o")])


def test_cli_exit_codes(tmp_path):
    script = os.path.join(repo_root(), "scripts", "glue_to_tsv.py")
    bad = subprocess.run([sys.executable, script, "--task", "SQuAD", "--input_dir", SAMPLES,
                          "--output_dir", str(tmp_path)], capture_output=True, text=True, cwd=str(tmp_path))
    assert bad.returncode == 2 and "error: unknown GLUE task 'SQuAD'" in bad.stderr
    ok = subprocess.run([sys.executable, script, "--task", "WNLI", "--input_dir", os.path.join(SAMPLES, "WNLI"),
                         "--output_dir", "out"], capture_output=True, text=True, cwd=str(tmp_path))
    assert ok.returncode == 0 and "WNLI train.tsv: 2 rows" in ok.stdout
    assert (tmp_path / "out" / "dev.tsv").is_file()
