"""The toolkit-core benchmark: pretraining tokens/s (bert mini, small, base; fp32 and bf16) and
preprocessing lines/s (1 and 2 processes) on this machine. Run it on an idle machine.

    python scripts/benchmark.py [--configs mini small base] [--steps 4]

Side by side with TencentPretrain (a checkout of it) and Hugging Face BertModel, interleaved in one run
(scripts/benchmark_compare.py; extra flags such as --threads, --reps, --parts go to it):

    python scripts/benchmark.py --side_by_side --tencentpretrain PATH [--quick]

WID and fine-tuning have their own: scripts/benchmark_wid.py, scripts/benchmark_finetune.py.

Guide: docs/performance.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402

import benchmark_compare  # noqa: E402
import benchmark_preprocess  # noqa: E402
import benchmark_pretrain  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["mini", "small", "base"],
                   help="model sizes for the plain pretraining table (models/bert/<name>_config.json)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per measurement")
    p.add_argument("--side_by_side", action="store_true",
                   help="compare with TencentPretrain (--tencentpretrain PATH) and Hugging Face BertModel")
    p.add_argument("--tencentpretrain", default=None, metavar="PATH", help="implies --side_by_side")
    p.add_argument("--quick", action="store_true", help="--side_by_side at tiny sizes (checks that it runs)")
    args, rest = p.parse_known_args()
    if args.side_by_side or args.tencentpretrain or args.quick:
        extra = (["--tencentpretrain", args.tencentpretrain] if args.tencentpretrain else []) + \
            (["--quick"] if args.quick else [])
        return benchmark_compare.main(extra + rest)
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    print("== pretraining ==", flush=True)
    benchmark_pretrain.main(["--configs", *args.configs, "--steps", str(args.steps)])
    print("\n== preprocessing ==", flush=True)
    benchmark_preprocess.main([])


if __name__ == "__main__":
    main()
