"""scripts/benchmark_glue.py (tasks/suite*.py): GLUE-format files and SQuAD through the fine-tuning engine,
several seeds, results JSON and table, resume, skip notes. Tiny random models on tiny synthetic files;
the real-data run is marked slow and skipped when ../shared/data is absent."""
import contextlib
import io
import json
import os
import random
import statistics

import pytest
import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.errors import UserError
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import save_state_dict
from tencentpretrain.resources import repo_root
from tencentpretrain.tasks.readers import Example
from tencentpretrain.tasks.suite import split_by_text_a, subsample
from tencentpretrain.tasks.suite_cli import main
from tencentpretrain.tasks.suite_report import glue_average, markdown_table, model_summary

WORDS = "the a cat dog sat ran on under mat house big small red blue quickly slowly".split()
TINY = {"emb_size": 32, "hidden_size": 32, "feedforward_size": 64, "heads_num": 2, "layers_num": 1,
        "max_seq_length": 128, "dropout": 0.1, "embedding": ["word", "pos", "seg"], "encoder": "transformer",
        "mask": "fully_visible", "target": ["mlm"], "tie_weights": True}


def _sentence(rng, n=6):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _write(path, lines, bom=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")


def _squad(path, title, n_questions, id_prefix):
    rng = random.Random(title)
    words = [rng.choice(WORDS) for _ in range(40)]
    context = " ".join(words)
    qas = []
    for i in range(n_questions):
        start = rng.randrange(0, 30)
        answer = " ".join(words[start:start + 2])
        qas.append({"id": f"{id_prefix}{i}", "question": f"what is {words[start]}?",
                    "answers": [{"text": answer, "answer_start": len(" ".join(words[:start])) + (1 if start else 0)}]})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": title, "paragraphs": [
        {"context": context, "qas": qas}]}]}), encoding="utf-8")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """CoLA (no header, 4 columns) and STS-B (10 columns) in GLUE's formats, two SQuAD v1.1 files."""
    root = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    for split, n in (("train", 24), ("dev", 12)):
        _write(root / "glue" / "CoLA" / f"{split}.tsv",
               [f"gj04\t{i % 2}\t{'' if i % 2 else '*'}\t{_sentence(rng)}" for i in range(n)])
        header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
        _write(root / "glue" / "STS-B" / f"{split}.tsv",
               [header] + [f"{i}\tmain\tf\t2012\t{i}\tnone\tnone\t{_sentence(rng)}\t{_sentence(rng)}\t{i % 6}.0"
                           for i in range(n)])
    (root / "squad").mkdir()
    _squad(root / "squad" / "dev-v1.1.json", "Alpha", 8, "a")
    _squad(root / "squad" / "dev-v1.1.part2.json", "Beta", 6, "b")
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """Random weights of a tiny BERT, with its config beside them (as pretrain.py writes them)."""
    out = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    cfg = load_model_config(None, {**TINY, "vocab_size": 30522})
    save_state_dict(build_model(cfg).state_dict(), str(out / "tiny.bin"))
    (out / "tiny_config.json").write_text(json.dumps(TINY), encoding="utf-8")
    return str(out / "tiny.bin")


def _argv(data, out, *extra):
    return ["--glue_dir", str(data / "glue"), "--squad_dir", str(data / "squad"), "--output_dir", str(out),
            "--preset", "tiny", "--seq_length_squad", "64", "--doc_stride", "32", "--batch_size", "8",
            "--learning_rate", "1e-3", *extra]


@pytest.fixture(scope="module")
def first_run(data, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    config = os.path.join(os.path.dirname(model), "tiny_config.json")
    rc, log = _run(_argv(data, out, "--model", f"tiny={model}", "--model", f"scratch=:{config}", "--seeds", "1", "2"))
    return rc, out, log


def _run(argv):
    """main(argv)'s status and what it printed (module-scoped fixtures cannot use capsys)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


def test_run_writes_cells_results_and_table(first_run):
    rc, out, log = first_run
    assert rc == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["finished"] is True and results["settings"]["seeds"] == [1, 2]
    assert results["settings"]["preset"] == "tiny" and results["wall_s"] > 0
    assert list(results["models"]) == ["tiny", "scratch"]
    for name, m in results["models"].items():
        assert list(m["tasks"]) == ["CoLA", "STS-B", "SQuAD"]
        for task, summary in m["tasks"].items():
            assert sorted(summary["seeds"]) == ["1", "2"]
            scores = [summary["seeds"][s]["score"] for s in ("1", "2")]
            assert summary["mean"]["score"] == pytest.approx(statistics.mean(scores))
            assert summary["std"]["score"] == pytest.approx(statistics.stdev(scores))
            assert (out / "cells" / name / task / "seed1.json").is_file()
        cola, stsb, squad = (m["tasks"][t] for t in ("CoLA", "STS-B", "SQuAD"))
        assert -100 <= cola["mean"]["mcc"] <= 100 and 0 <= cola["mean"]["acc"] <= 100
        assert cola["eval_examples"] == 12 and cola["train_examples"] == 24
        for s in ("1", "2"):
            metrics = stsb["seeds"][s]["metrics"]
            assert stsb["seeds"][s]["score"] == pytest.approx((metrics["pearson"] + metrics["spearman"]) / 2)
        assert set(squad["mean"]) == {"exact_match", "f1", "score"} and 0 <= squad["mean"]["f1"] <= 100
        assert squad["train_examples"] == 8 and squad["eval_examples"] == 6
        assert m["glue_average"]["tasks"] == ["CoLA", "STS-B"]
        assert m["glue_average"]["mean"] == pytest.approx((cola["mean"]["score"] + stsb["mean"]["score"]) / 2)
    assert results["models"]["tiny"]["backbone_parameters"] == results["models"]["scratch"]["backbone_parameters"]
    table = (out / "results.md").read_text(encoding="utf-8")
    lines = table.splitlines()
    assert lines[0] == ("| model | params | CoLA (MCC) | STS-B (Pearson/Spearman) | GLUE avg | SQuAD (EM/F1) |")
    assert lines[2].startswith("| tiny | ") and lines[3].startswith("| scratch | ")
    avg = results["models"]["tiny"]["glue_average"]
    assert f"| {avg['mean']:.1f} ± {avg['std']:.1f} |" in lines[2]
    assert "GLUE avg: the unweighted mean of the task scores of CoLA, STS-B" in table
    assert "[12/12] scratch · SQuAD · seed 2" in log and "suite ETA" in log and "step 3/3" in log


def test_absent_tasks_are_skipped_with_a_note(first_run, data):
    _, out, log = first_run
    for task in ("SST-2", "MRPC", "QQP", "MNLI", "QNLI", "RTE", "WNLI"):
        assert f"skip {task}: no folder {data / 'glue' / task}\n" in log
    assert "skip CoLA" not in log and "skip STS-B" not in log and "skip SQuAD" not in log
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert len(results["skipped"]) == 7


def test_rerun_skips_finished_cells(first_run, data, model):
    _, out, _ = first_run
    cells = sorted((out / "cells").rglob("seed*.json"))
    assert len(cells) == 12
    before = {p: os.stat(p).st_mtime_ns for p in cells}
    rc, log = _run(_argv(data, out, "--model", f"tiny={model}", "--seeds", "1", "2", "3", "--tasks", "CoLA"))
    assert rc == 0
    assert log.count("done already") == 2 and "[3/3] tiny · CoLA · seed 3: 24 training" in log
    assert {p: os.stat(p).st_mtime_ns for p in cells} == before
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert sorted(results["models"]["tiny"]["tasks"]["CoLA"]["seeds"]) == ["1", "2", "3"]


def test_changed_settings_are_refused_not_mixed(first_run, data, model):
    _, out, _ = first_run
    refused = r"seed1.json was computed with other settings \(run.epochs_num differ\).*--rerun"
    with pytest.raises(UserError, match=refused):
        main(_argv(data, out, "--model", f"tiny={model}", "--tasks", "CoLA", "--epochs_num", "2"))


def test_same_seed_same_numbers(first_run, data, model, tmp_path, capsys):
    _, out, _ = first_run
    main(_argv(data, tmp_path, "--model", f"tiny={model}", "--seeds", "2", "--tasks", "STS-B"))
    again = json.loads((tmp_path / "cells" / "tiny" / "STS-B" / "seed2.json").read_text(encoding="utf-8"))
    first = json.loads((out / "cells" / "tiny" / "STS-B" / "seed2.json").read_text(encoding="utf-8"))
    assert again["metrics"] == first["metrics"]


def test_mnli_scores_matched_and_mismatched_at_the_best_epoch(model, tmp_path):
    rng = random.Random(1)
    labels = ("entailment", "neutral", "contradiction")
    for name, n in (("train", 18), ("dev_matched", 9), ("dev_mismatched", 6)):
        _write(tmp_path / "glue" / "MNLI" / f"{name}.tsv", ["index\tsentence1\tsentence2\tgold_label"] + [
            f"{i}\t{_sentence(rng)}\t{_sentence(rng)}\t{labels[i % 3]}" for i in range(n)])
    rc, log = _run(_argv(tmp_path, tmp_path / "out", "--model", f"tiny={model}", "--tasks", "MNLI", "--epochs_num", "2",
                         "--select_best_epoch"))
    cell = json.loads((tmp_path / "out" / "cells" / "tiny" / "MNLI" / "seed1.json").read_text(encoding="utf-8"))
    assert rc == 0 and cell["epoch"] in (1, 2) and cell["eval_examples"] == 15
    assert cell["score"] == pytest.approx((cell["metrics"]["acc"] + cell["metrics"]["acc_mm"]) / 2)
    assert "epoch 2 dev_mismatched: acc" in log  # both sets scored after every epoch
    table = (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    assert "| MNLI (acc/acc-mm) | GLUE avg |" in table and "the best epoch on the scored set" in table


def test_nothing_present_exits_zero_with_a_note(tmp_path, model, capsys):
    out = tmp_path / "out"
    rc = main(["--glue_dir", str(tmp_path / "none"), "--squad_dir", str(tmp_path / "none"), "--output_dir", str(out),
               "--model", f"tiny={model}"])
    log = capsys.readouterr().out
    assert rc == 0 and "nothing to benchmark" in log and "skip CoLA: no folder" in log
    assert "skip SQuAD: " in log and not out.exists()


def test_glue_average_arithmetic_on_fixed_numbers():
    def cell(metrics, score):
        return {"metrics": metrics, "score": score, "epoch": 1, "wall_s": 1.0, "train_examples": 10,
                "eval_examples": 5, "backbone_parameters": 2_500_000}
    cells = {"CoLA": {1: cell({"mcc": 50.0, "acc": 80.0}, 50.0), 2: cell({"mcc": 40.0, "acc": 70.0}, 40.0)},
             "MRPC": {1: cell({"f1": 90.0, "acc": 80.0}, 85.0), 2: cell({"f1": 80.0, "acc": 70.0}, 75.0)},
             "SQuAD": {1: cell({"exact_match": 20.0, "f1": 30.0}, 30.0),
                       2: cell({"exact_match": 10.0, "f1": 20.0}, 20.0)}}
    summary = model_summary(cells)
    avg = summary["glue_average"]
    # per seed: (50 + 85) / 2 = 67.5 and (40 + 75) / 2 = 57.5; SQuAD is not part of the average
    assert avg["per_seed"] == {"1": 67.5, "2": 57.5} and avg["mean"] == 62.5
    assert avg["std"] == pytest.approx(statistics.stdev([67.5, 57.5]))
    assert glue_average({"STS-B": 88.0, "RTE": 60.0, "SQuAD": 1.0}) == 74.0 and glue_average({"SQuAD": 5.0}) is None
    results = {"models": {"m": summary}, "settings": {
        "seeds": [1, 2], "squad_eval_path": "/x/e.json", "squad_train_path": "/x/t.json", "max_train_examples": 100,
        "max_eval_examples": 0, "caps": {"SQuAD": 7}, "eval_caps": {}, "preset": "quick", "epochs_num": 2,
        "batch_size": 32, "learning_rate": 1e-4, "seq_length": {"single": 64, "pair": 128, "squad": 256},
        "doc_stride": 128, "select_best_epoch": False}}
    table = markdown_table(results)
    assert "| m | 2.5M | 45.0 ± 7.1 | 85.0/75.0 ± 7.1 | 62.5 ± 7.1 | 15.0/25.0 ± 7.1 |" in table
    assert "MRPC and QQP (F1 + acc) / 2" in table and "(SQuAD: train ≤ 7)" in table
    assert "train ≤ 100, eval ≤ all examples per task" in table


def test_subsample_and_dev_split_are_fixed_and_disjoint():
    items = list(range(100))
    assert subsample(items, 10) == subsample(items, 10) == sorted(subsample(items, 10))
    assert len(subsample(items, 10)) == 10 and subsample(items, 0) == items and subsample(items, 200) == items
    rows = [Example(f"q{i // 3}", f"s{i}", i % 2) for i in range(30)]  # 10 questions, 3 rows each
    train, held_out = split_by_text_a(rows)
    assert len(train) == len(held_out) == 15
    assert not {ex.text_a for ex in train} & {ex.text_a for ex in held_out}


@pytest.mark.parametrize("argv, message", [
    (["--model", "a=/no/such.bin"], "--model a=/no/such.bin: model file not found: /no/such.bin"),
    (["--model", "noequals"], "expected NAME=PATH"),
    (["--model", "bad name=:models/bert/tiny_config.json"], "may hold only letters"),
    (["--model", "a=:models/bert/tiny_config.json", "--model", "a=:models/bert/tiny_config.json"], "used twice"),
    (["--model", "a="], "needs a config"),
    (["--cap", "SST-2=many", "--model", "a=:models/bert/tiny_config.json"], "--cap SST-2=many: expected TASK=N"),
    (["--cap", "XYZ=3", "--model", "a=:models/bert/tiny_config.json"], "unknown benchmark task 'XYZ'"),
    (["--seeds", "1", "1", "--model", "a=:models/bert/tiny_config.json"], "lists a seed twice"),
    ([], "no model to benchmark"),
])
def test_bad_flags_are_clear_errors(argv, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        main(argv)


def test_squad_files_must_be_disjoint(data, model, tmp_path):
    same = str(data / "squad" / "dev-v1.1.json")
    with pytest.raises(UserError, match="share 8 question ids"):
        main(_argv(data, tmp_path, "--model", f"tiny={model}", "--tasks", "SQuAD", "--squad_train_path", same,
                   "--squad_eval_path", same))


def test_sequence_longer_than_the_model_is_refused(data, model, tmp_path):
    with pytest.raises(UserError, match="takes at most 128 tokens.*lower --seq_length"):
        main(_argv(data, tmp_path, "--model", f"tiny={model}", "--tasks", "STS-B", "--seq_length_pair", "256"))


# ---------------------------------------------------------------- the real files (slow)
SHARED = os.path.join(os.path.dirname(repo_root()), "shared", "data")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "glue")), reason=f"no GLUE data in {SHARED}")
def test_real_glue_and_squad_at_a_tiny_cap(model, tmp_path, capsys):
    rc = main(["--model", f"tiny={model}", "--preset", "tiny", "--max_train_examples", "32",
               "--max_eval_examples", "32", "--cap", "SQuAD=16", "--eval_cap", "SQuAD=16", "--seq_length_squad", "128",
               "--dev_split", "--output_dir", str(tmp_path)])
    assert rc == 0
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    tasks = results["models"]["tiny"]["tasks"]
    assert {"CoLA", "SST-2", "MRPC", "STS-B", "RTE"} <= set(tasks)
    for name, summary in tasks.items():
        assert summary["train_examples"] == (16 if name == "SQuAD" else 32)
        assert -100 <= summary["mean"]["score"] <= 100
    if "QNLI" in tasks:
        assert "no train.tsv" in tasks["QNLI"]["note"]
    assert "SQuAD" not in tasks or tasks["SQuAD"]["eval_examples"] == 16
    assert "GLUE avg" in (tmp_path / "results.md").read_text(encoding="utf-8")
