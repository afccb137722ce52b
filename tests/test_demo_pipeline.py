"""The WID demonstration (scripts/wid_demo.py and its package scripts/wid_demo_app/) at its micro preset:
a tiny random teacher instead of MiniLM, a slice of the corpus, every stage for real."""
import contextlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import time

import pytest

from tencentpretrain.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))  # the demo is an application beside the library

from wid_demo_app import Demo, preset_with  # noqa: E402
from wid_demo_app.files import split_corpus  # noqa: E402
from wid_demo_app.report import read_losses, read_widths  # noqa: E402
from wid_demo_app.stages import wid_config, wid_schedule_steps  # noqa: E402

# all-MiniLM-L6-v2's shape (the quick, full and smoke presets' teacher), as the teacher stage converts it
MINILM_SHAPE = {"emb_size": 384, "hidden_size": 384, "feedforward_size": 1536, "heads_num": 12, "layers_num": 6,
                "max_seq_length": 512, "vocab_size": 30522, "target": ["mlm"], "tie_weights": True,
                "data_processor": "mlm"}


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


def test_pretrain_bf16_and_seed_reach_every_pretraining_stage(tmp_path, monkeypatch):
    """--set pretrain_bf16=true: every pretrain.py run of the demo (adapt, WID, KD, pruning, random all go
    through Demo.pretrain) gets --bf16; the shipped presets stay fp32; a non-boolean value is refused;
    --set seed=N reaches their --seed (7 by default)."""
    commands = {}
    for value in (True, False):
        demo = Demo(preset_with("micro", {"pretrain_bf16": value}), str(tmp_path))
        monkeypatch.setattr(demo, "run_logged", lambda stage, cmd, *rest, v=value: commands.setdefault(v, cmd))
        demo.pretrain("adapt", "train.tpd", "config.json", "init.bin", str(tmp_path / "adapt" / "m.bin"), 3, 1e-4)
    assert commands[True].count("--bf16") == 1 and "--bf16" not in commands[False]
    assert [c for c in commands[True] if c != "--bf16"] == commands[False]
    assert not any(preset_with(name, {}).pretrain_bf16 for name in ("micro", "smoke", "quick", "full", "compare"))
    assert commands[False][commands[False].index("--seed") + 1] == "7"  # the published runs' seed
    demo = Demo(preset_with("micro", {"seed": 8}), str(tmp_path))
    monkeypatch.setattr(demo, "run_logged", lambda stage, cmd, *rest: commands.update(seeded=cmd))
    demo.pretrain("wid", "train.tpd", "config.json", "init.bin", str(tmp_path / "wid" / "m.bin"), 3, 1e-4)
    assert commands["seeded"][commands["seeded"].index("--seed") + 1] == "8"
    with pytest.raises(UserError, match="pretrain_bf16: expected true or false, got 'yes'"):
        preset_with("quick", {"pretrain_bf16": "yes"})


def test_smoke_preset_runs_every_stage_of_the_quick_start_briefly():
    """CI runs `scripts/quickstart.sh --preset smoke`: the real teacher and the quick start's stages, few steps."""
    smoke, quick = preset_with("smoke", {}), preset_with("quick", {})
    assert smoke.teacher == quick.teacher == "minilm"
    assert (smoke.target_hidden, smoke.target_ffn) == (quick.target_hidden, quick.target_ffn) == (192, 768)
    assert smoke.baselines is quick.baselines is False and smoke.probe_steps == 0
    assert wid_schedule_steps(wid_config(smoke, MINILM_SHAPE)) < smoke.wid_steps <= 4 and smoke.adapt_steps <= 2
    assert smoke.compactor_lr * smoke.l2_lambda >= 1.0  # masked entries are dead at the merge
    assert smoke.finetune_examples <= 32 and smoke.finetune_report_steps <= 2
    demo = Demo(smoke, "/nonexistent")
    assert [name for name, _ in demo.stages()] == [name for name, _ in Demo(quick, "/nonexistent").stages()]


def test_schedule_length_is_wids_own_plan(micro):
    """The demo asks WID's planner for the schedule: it is the step of the last mask update WID logged."""
    demo, _ = micro
    planned = wid_schedule_steps(json.loads(open(demo.path("wid", "wid_config.json")).read()))
    with open(demo.path("wid", "compacted.bin.masks.jsonl")) as f:
        logged = max(json.loads(line)["step"] for line in f if line.strip())
    assert planned == logged == 4  # micro: max(4 FFN stages, 2 attention stages x interval 2) x w_step 1
    for name, steps in (("quick", 80), ("full", 160)):  # the README's "16 updates x 5 / x 10 steps"
        preset = preset_with(name, {})
        assert wid_schedule_steps(wid_config(preset, MINILM_SHAPE)) == steps < preset.wid_steps


def test_wid_stage_refuses_a_run_shorter_than_the_schedule(tmp_path):
    demo = Demo(preset_with("micro", {"wid_steps": 4}), str(tmp_path))
    os.makedirs(demo.path("teacher"))
    with open(demo.path("teacher", "teacher_config.json"), "w") as f:
        json.dump({**MINILM_SHAPE, "emb_size": 48, "hidden_size": 48, "feedforward_size": 192, "heads_num": 4}, f)
    with pytest.raises(UserError, match=r"preset micro: wid_steps 4 must exceed the mask schedule \(4 steps\)"):
        dict(demo.stages())["wid"]()
    assert not os.path.exists(demo.path("wid", "compacted.bin"))


def test_library_holds_no_demo_and_the_cli_checks_its_flags():
    assert not os.path.exists(os.path.join(ROOT, "tencentpretrain", "demo.py"))
    script = os.path.join(ROOT, "scripts", "wid_demo.py")
    out = subprocess.run([sys.executable, script, "--preset", "micro", "--set", "adapt_step=3"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "unknown preset setting(s) ['adapt_step']" in out.stderr
    out = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and all(f in out.stdout for f in ("--preset", "--run_dir", "--publish", "smoke"))
