"""The WID demonstration pipeline (tencentpretrain/demo.py, scripts/wid_demo.py) at its micro preset:
a tiny random teacher instead of MiniLM, a slice of the corpus, every stage for real."""
import contextlib
import importlib.util
import io
import json
import os
import re
import time

import pytest

from tencentpretrain.demo import Demo, preset_with, read_losses, read_widths, split_corpus
from tencentpretrain.errors import UserError


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("demo") / "run")
    demo = Demo(preset_with("micro", {}), run_dir, threads=2)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        demo.run()
    return demo, out.getvalue()


def test_micro_pipeline_runs_every_stage_and_reports(micro):
    demo, printed = micro
    for i, name in enumerate(["teacher", "data", "adapt", "probe", "wid", "merge", "random", "pruned", "evaluate",
                              "finetune", "latency", "report"], 1):
        assert f"[{i}/12] {name}: done" in printed
    results = json.loads(open(demo.path("results.json")).read())
    models = results["models"]
    assert list(models) == ["teacher", "wid", "random", "pruned"]
    assert models["teacher"]["shape"] == {"hidden_size": 48, "heads_num": 4, "feedforward_size": 192, "layers_num": 2}
    for name in ("wid", "random", "pruned"):
        assert models[name]["shape"] == {"hidden_size": 24, "heads_num": 4, "feedforward_size": 96, "layers_num": 2}
        assert models[name]["params"] < 0.55 * models["teacher"]["params"]
    for m in models.values():
        assert 0.0 <= m["mlm_acc"] <= 1.0 and m["mlm_loss"] > 0
        assert len(m["sentiment_test_acc"]) == 2 and 0.0 <= m["sentiment_mean"] <= 1.0
        assert set(m["latency_ms"]) == {"1", "32"} and all(v > 0 for v in m["latency_ms"].values())
    # every model answered the same masked tokens
    evals = [json.loads(open(demo.path("eval", f"{n}.json")).read()) for n in models]
    assert len({(e["predictions"], e["instances"], e["seed"]) for e in evals}) == 1
    assert "frozen_encoder_head_mlm_acc" in results["extras"]
    assert "pruned_before_training_mlm_acc" in results["extras"]
    table = open(demo.path("results.md")).read()
    assert sum(line.startswith("| ") for line in table.splitlines()) == 5  # header + 4 models
    assert "| WID student | 24 / 4 / 96 / 2 |" in table
    # WID reached the target widths and the merge wrote a plain student
    widths = read_widths(demo.path("wid", "compacted.bin.masks.jsonl"))
    assert widths["stream S"][0] == (0, 48) and widths["stream S"][-1][1] == 24
    assert widths["FFN F (mean over layers)"][-1][1] == 96
    student = json.loads(open(demo.path("wid", "student_config.json")).read())
    assert student["hidden_size"] == 24 and student["encoder"] == "transformer"
    # fine-tuning progress reaches the terminal, not only logs/finetune.log
    progress = re.findall(r"^  (\w+) lr 0.001 seed (\d): epoch 1/1 step (\d+)/2 loss [0-9.]+ lr \S+ [0-9.]+ examples/s "
                          r"ETA ", printed, re.M)
    assert sorted(set(progress)) == [(m, s, "2") for m in ("pruned", "random", "teacher", "wid") for s in "12"]
    assert open(demo.path("logs", "finetune.log")).read().count("examples/s ETA") == 8
    steps, losses = read_losses(demo.path("logs", "wid.log"))
    assert steps == [2, 4, 6] and all(x > 0 for x in losses)
    if importlib.util.find_spec("matplotlib"):
        assert os.path.getsize(demo.path("wid_plot.png")) > 1000
    else:
        assert "matplotlib is not installed" in printed


def test_rerun_skips_finished_stages(micro):
    demo, _ = micro
    out = io.StringIO()
    start = time.time()
    with contextlib.redirect_stdout(out):
        Demo(demo.preset, demo.run_dir).run()
    printed = out.getvalue()
    assert printed.count("already done, skipped") == 11  # all but the report, which is rewritten
    assert time.time() - start < 20


def test_split_corpus_holds_out_the_last_chapters(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("ch1 a\nch1 b\n\nch2 a\n\nch3 a\nch3 b\n", encoding="utf-8")
    n_train, n_eval = split_corpus(str(corpus), str(tmp_path / "t.txt"), str(tmp_path / "e.txt"), 2)
    assert (tmp_path / "e.txt").read_text() == "ch2 a\nch3 a\nch3 b\n"
    assert (tmp_path / "t.txt").read_text() == "ch1 a\nch1 b\n"
    assert (n_train, n_eval) == (2, 3)
    with pytest.raises(UserError, match="3 chapters .* cannot hold out 5"):
        split_corpus(str(corpus), str(tmp_path / "t.txt"), str(tmp_path / "e.txt"), 5)


def test_preset_overrides_are_checked():
    assert preset_with("quick", {"adapt_steps": 7}).adapt_steps == 7
    with pytest.raises(UserError, match="unknown preset setting.*adapt_step"):
        preset_with("quick", {"adapt_step": 7})
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        preset_with("huge", {})


def test_smoke_preset_runs_every_stage_of_the_quick_start_briefly():
    """CI runs `scripts/quickstart.sh --preset smoke`: the real teacher and the quick start's stages, few steps."""
    smoke, quick = preset_with("smoke", {}), preset_with("quick", {})
    assert smoke.teacher == quick.teacher == "minilm"
    assert (smoke.target_hidden, smoke.target_ffn) == (quick.target_hidden, quick.target_ffn) == (192, 768)
    assert smoke.baselines is quick.baselines is False and smoke.probe_steps == 0
    assert smoke.schedule_steps < smoke.wid_steps <= 4 and smoke.adapt_steps <= 2
    assert smoke.compactor_lr * smoke.l2_lambda >= 1.0  # masked entries are dead at the merge
    assert smoke.finetune_examples <= 32 and smoke.finetune_report_steps <= 2
    demo = Demo(smoke, "/nonexistent")
    assert [name for name, _ in demo.stages()] == [name for name, _ in Demo(quick, "/nonexistent").stages()]
