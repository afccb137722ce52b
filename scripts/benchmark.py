"""The toolkit-core benchmark: pretraining tokens/s (bert mini, small, base; fp32 and bf16) and
preprocessing lines/s (1 and 2 processes) on this machine. Run it on an idle machine.

    python scripts/benchmark.py [--configs mini small base] [--steps 4]

WID and fine-tuning have their own: scripts/benchmark_wid.py, scripts/benchmark_finetune.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402

import benchmark_preprocess  # noqa: E402
import benchmark_pretrain  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["mini", "small", "base"])
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args()
    print("== pretraining ==", flush=True)
    benchmark_pretrain.main(["--configs", *args.configs, "--steps", str(args.steps)])
    print("\n== preprocessing ==", flush=True)
    benchmark_preprocess.main([])


if __name__ == "__main__":
    main()
