"""The WID demonstration behind scripts/wid_demo.py: a real teacher compressed end to end, against baselines.

An application of the toolkit, not part of it: every step is a library call (conversion, preprocessing,
pretrain.py, WID's planner and merge, magnitude pruning, MLM evaluation, latency, the fine-tuning engine).

    presets.py   the settings of each preset (micro, smoke, quick, full)
    runner.py    Demo: the run directory, the stage loop (resume, timing), pretrain.py subprocesses
    stages.py    the stages in running order, each skipped when its outputs exist
    finetune.py  sentiment fine-tuning of one model
    report.py    results.json, results.md (the table) and wid_plot.png
    files.py     reading its JSON files, a log that also prints, the corpus split
"""
from .presets import PRESETS, Preset, preset_with  # noqa: F401
from .report import publish  # noqa: F401
from .runner import Demo  # noqa: F401
