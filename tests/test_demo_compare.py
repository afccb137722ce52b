"""The demo's comparison stages (the `compare` preset's path) at micro size: three KD recipes, pruning and
random init from the same adapted tiny teacher at the same steps, GLUE-format tasks and SQuAD through
scripts/benchmark_glue.py, the wall-clock-matched variant of the two best, attention divergence, the table."""
import contextlib
import io
import json
import os
import random
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))  # the demo is an application beside the library

from test_benchmark_glue import _sentence, _squad, _write  # noqa: E402
from wid_demo_app import PRESETS, Demo, preset_with  # noqa: E402
from wid_demo_app.report import comparison_table  # noqa: E402

RECIPES = ("distilbert", "tinybert", "minilm")


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    rng = random.Random(0)
    for split, n in (("train", 24), ("dev", 12)):
        _write(root / "glue" / "SST-2" / f"{split}.tsv",
               ["sentence\tlabel"] + [f"{_sentence(rng)}\t{i % 2}" for i in range(n)])
        _write(root / "glue" / "CoLA" / f"{split}.tsv",
               [f"gj04\t{i % 2}\t{'' if i % 2 else '*'}\t{_sentence(rng)}" for i in range(n)])
    (root / "squad").mkdir()
    _squad(root / "squad" / "dev-v1.1.json", "Alpha", 8, "a")
    _squad(root / "squad" / "dev-v1.1.part2.json", "Beta", 6, "b")
    glue_args = ("--preset", "tiny", "--tasks", "SST-2", "CoLA", "SQuAD", "--glue_dir", str(root / "glue"),
                 "--squad_dir", str(root / "squad"), "--seq_length_squad", "32", "--doc_stride", "16",
                 "--seeds", "1", "2")
    preset = preset_with("micro", {"kd_recipes": RECIPES, "glue_args": glue_args, "matched": True,
                                   "attention": True, "finetune_seeds": (), "finetune_lrs": (), "probe_steps": 0})
    demo = Demo(preset, str(root / "run"), threads=2)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        demo.run()
    return demo, out.getvalue()


def test_every_comparison_stage_runs(compared):
    demo, printed = compared
    names = [name for name, _ in demo.stages()]
    assert names == ["teacher", "data", "adapt", "wid", "merge", "random", "pruned", "kd_distilbert", "kd_tinybert",
                     "kd_minilm", "evaluate", "finetune", "glue", "matched", "latency", "attention", "report"]
    for i, name in enumerate(names, 1):
        assert f"[{i}/{len(names)}] {name}:" in printed


def test_kd_students_use_the_shipped_recipes_and_the_adapted_teacher(compared):
    demo, _ = compared
    for recipe in RECIPES:
        cfg = json.loads(open(demo.path(f"kd_{recipe}_config.json")).read())
        shipped = json.loads(open(os.path.join(ROOT, "models", "kd", f"minilm_l6_to_192_{recipe}.json")).read())["kd"]
        assert {k: v for k, v in cfg["kd"].items() if not k.startswith("teacher_")} == \
            {k: v for k, v in shipped.items() if not k.startswith("teacher_")}
        assert cfg["kd"]["teacher_model_path"] == demo.path("adapt", "teacher.bin")
        log = open(demo.path("logs", f"kd_{recipe}.log")).read()
        assert f"step {demo.preset.wid_steps}/{demo.preset.wid_steps}" in log  # the same steps as WID


def test_glue_cells_for_every_model_and_seed(compared):
    demo, _ = compared
    students = json.loads(open(demo.path("glue", "students", "results.json")).read())
    teacher = json.loads(open(demo.path("glue", "teacher", "results.json")).read())
    assert list(teacher["models"]) == ["teacher"]
    matched = json.loads(open(demo.path("matched.json")).read())
    expected = ["wid", "random", "pruned"] + [f"kd_{r}" for r in RECIPES] + [matched["name"]]
    assert list(students["models"]) == expected
    assert teacher["settings"]["learning_rate"] == demo.preset.glue_teacher_lr
    assert students["settings"]["learning_rate"] == demo.preset.glue_student_lr
    for m in list(students["models"].values()) + list(teacher["models"].values()):
        assert set(m["tasks"]) == {"SST-2", "CoLA", "SQuAD"}
        assert all(set(t["seeds"]) == {"1", "2"} for t in m["tasks"].values())
        assert m["glue_average"]["tasks"] == ["SST-2", "CoLA"]


def test_matched_variant_fills_the_other_best_students_time(compared):
    demo, _ = compared
    plan = json.loads(open(demo.path("matched.json")).read())
    students = json.loads(open(demo.path("glue", "students", "results.json")).read())["models"]
    same_steps = [n for n in students if not n.endswith("_matched")]
    ranked = sorted(same_steps, key=lambda n: students[n]["glue_average"]["mean"], reverse=True)
    assert plan["best"] == ranked[:2]
    costs = plan["seconds_at_same_steps"]
    assert plan["method"] == min(plan["best"], key=costs.get)
    assert plan["name"] == plan["method"] + "_matched"
    assert plan["steps"] == max(1, round(demo.preset.wid_steps * max(costs.values()) / min(costs.values())))
    log = open(demo.path("logs", f"{plan['name']}.log")).read()
    assert f"step {plan['steps']}/{plan['steps']}" in log
    assert os.path.isfile(demo.model_files(plan["name"])[0])


def test_report_has_the_comparison_table(compared):
    demo, _ = compared
    results = json.loads(open(demo.path("results.json")).read())
    assert set(results["comparison"]) == {"teacher", "students", "matched", "attention"}
    models = results["models"]
    assert models["wid"]["training_seconds"] > 0 and models["kd_minilm"]["training_seconds"] > 0
    table = open(demo.path("results.md")).read()
    assert "## GLUE and SQuAD" in table
    section = table.split("## GLUE and SQuAD")[1].split("## Attention divergence from the teacher")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == len(models) == 8  # teacher, WID, random, pruned, three KD, the matched variant
    assert sum(r.startswith("| KD: ") for r in rows) >= 3 and rows[1].startswith("| WID student |")
    assert all(r.count("|") == rows[0].count("|") for r in rows)
    assert comparison_table(results) in table and "wall-clock-matched" in section
    attention = table.split("## Attention divergence from the teacher")[1]
    assert sum(line.startswith("| kd_") for line in attention.splitlines()) >= 3


def test_compare_preset_is_the_quick_presets_teacher_and_wid():
    quick, compare = PRESETS["quick"], PRESETS["compare"]
    for key in ("batch_size", "adapt_steps", "adapt_lr", "wid_steps", "wid_w_step", "l2_lambda", "seq_length",
                "target_hidden", "target_ffn", "compactor_lr", "wid_lr"):
        assert getattr(quick, key) == getattr(compare, key), key
    assert compare.kd_recipes == RECIPES and compare.matched and compare.attention and compare.baselines
