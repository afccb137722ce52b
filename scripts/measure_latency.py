"""CPU latency of models' encoders (embeddings + encoder forward, what a task model runs).

    python scripts/measure_latency.py --model teacher=models/teacher.bin,models/teacher_config.json \
        --model student=models/student.bin,models/student_config.json [--batch_sizes 1 32] [--seq_length 128]
    python scripts/measure_latency.py --model bert_mini=,models/bert/mini_config.json   # random weights

Median wall time of --repeats forwards under torch.inference_mode with --threads intra-op threads; the
models take turns (round-robin), so load from other processes hits them alike.

Guide: docs/wid_demo.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

from tencentpretrain.errors import UserError, run_cli  # noqa: E402


def main(argv=None):
    from tencentpretrain.evaluation import count_parameters, load_model, measure_latency
    from tencentpretrain.resources import resolve
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="NAME=WEIGHTS,CONFIG",
                   help="a model to time (WEIGHTS may be empty: random weights)")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 32], help="batch sizes to time")
    p.add_argument("--seq_length", type=int, default=128, help="tokens per sequence")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--repeats", type=int, default=10, help="forwards per model and batch size; the median counts")
    args = p.parse_args(argv)
    models = {}
    for spec in args.model:
        name, sep, paths = spec.partition("=")
        weights, comma, config = paths.partition(",")
        if not sep or not comma or not config:
            raise UserError(f"--model {spec!r}: expected NAME=WEIGHTS,CONFIG (WEIGHTS may be empty)")
        models[name] = load_model(resolve(config), weights or None)
    ms = measure_latency(models, args.batch_sizes, args.seq_length, args.threads, args.repeats)
    print(f"median of {args.repeats} forwards, sequence length {args.seq_length}, {args.threads} threads")
    print("| model | parameters | " + " | ".join(f"batch {b}" for b in args.batch_sizes) + " |")
    print("|---|---|" + "---|" * len(args.batch_sizes))
    for name, per in ms.items():
        print(f"| {name} | {count_parameters(models[name]) / 1e6:.2f}M | " +
              " | ".join(f"{per[b]:.1f} ms" for b in args.batch_sizes) + " |")


if __name__ == "__main__":
    run_cli(main)
