"""Pretraining tokens/s of the BERT configs on this machine, fp32 and bf16, one process.

    python scripts/benchmark_pretrain.py [--configs mini small base] [--batch_size 8] [--seq_length 128]

Guide: docs/performance.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

import torch  # noqa: E402

from tencentpretrain.config import load_model_config  # noqa: E402
from tencentpretrain.errors import run_cli  # noqa: E402
from tencentpretrain.model_builder import build_model  # noqa: E402
from tencentpretrain.resources import models_dir  # noqa: E402
from tencentpretrain.training.benchmark import tokens_per_second  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["mini", "small", "base"], help="models/bert/<name>_config.json")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"],
                   help="fp32 and/or bf16 autocast")
    p.add_argument("--batch_size", type=int, default=8, help="sequences per step")
    p.add_argument("--seq_length", type=int, default=128, help="tokens per sequence")
    p.add_argument("--steps", type=int, default=4, help="timed steps, after --warmup_steps")
    p.add_argument("--warmup_steps", type=int, default=2, help="untimed steps before the clock starts")
    p.add_argument("--vocab_size", type=int, default=30522, help="vocabulary size of the synthetic model")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size} x seq "
          f"{args.seq_length}, {args.steps} timed steps after {args.warmup_steps} warmup (full train steps: "
          f"forward, backward, clipping, AdamW)")
    rows = []
    for name in args.configs:
        cfg = load_model_config(os.path.join(models_dir(), "bert", f"{name}_config.json"),
                                {"vocab_size": args.vocab_size})
        speeds = {}
        for precision in args.precisions:
            torch.manual_seed(0)
            model = build_model(cfg)
            speeds[precision] = tokens_per_second(model, args.batch_size, args.seq_length, precision,
                                                  args.steps, args.warmup_steps)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append((name, params, speeds))
        print(f"  {name}: " + ", ".join(f"{k} {v:,.0f} tokens/s" for k, v in speeds.items()), flush=True)
    head = ["config", "params"] + [f"{p} tokens/s" for p in args.precisions]
    if len(args.precisions) == 2:
        head.append(f"{args.precisions[1]}/{args.precisions[0]}")
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, params, speeds in rows:
        cells = [name, f"{params:.1f}M"] + [f"{speeds[p]:,.0f}" for p in args.precisions]
        if len(args.precisions) == 2:
            cells.append(f"{speeds[args.precisions[1]] / speeds[args.precisions[0]]:.2f}x")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    run_cli(main)
