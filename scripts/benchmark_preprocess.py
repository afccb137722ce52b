"""Preprocessing throughput (corpus lines/s) with 1 and 2 processes, per processor, as a table.

    python scripts/benchmark_preprocess.py [--corpus_path corpora/moby_dick.txt] [--processors mlm bert]

Guide: docs/performance.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from tencentpretrain.data.pipeline import PreprocessOptions, preprocess  # noqa: E402
from tencentpretrain.errors import run_cli  # noqa: E402
from tencentpretrain.resources import repo_root  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus_path", default=os.path.join(repo_root(), "corpora", "moby_dick.txt"),
                   help="corpus to preprocess (default: the shipped Moby-Dick)")
    p.add_argument("--processors", nargs="+", default=["mlm", "bert"],
                   help="preprocess.py --data_processor values to time")
    p.add_argument("--processes", nargs="+", type=int, default=[1, 2], help="--processes_num values to time")
    p.add_argument("--seq_length", type=int, default=128, help="instance length")
    p.add_argument("--dup_factor", type=int, default=5, help="copies of the corpus (preprocess.py --dup_factor)")
    p.add_argument("--dynamic_masking", action="store_true", help="time dynamic instead of static masking")
    p.add_argument("--repeat", type=int, default=3, help="runs per cell; the fastest counts (less noise)")
    a = p.parse_args(argv)
    print(f"corpus {a.corpus_path} ({os.path.getsize(a.corpus_path) / 1e6:.1f} MB), seq_length {a.seq_length}, "
          f"dup_factor {a.dup_factor}, {'dynamic' if a.dynamic_masking else 'static'} masking, "
          f"{os.cpu_count()} CPUs, fastest of {a.repeat} runs")
    print(f"{'processor':<10} {'processes':>9} {'lines':>7} {'instances':>9} {'seconds':>8} {'cpu s':>6} "
          f"{'lines/s':>8} {'speedup':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for processor in a.processors:
            base = None
            for n in a.processes:
                opts = PreprocessOptions(a.corpus_path, os.path.join(tmp, f"{processor}-{n}.tpd"),
                                         data_processor=processor, seq_length=a.seq_length, dup_factor=a.dup_factor,
                                         dynamic_masking=a.dynamic_masking, processes_num=n)
                secs = cpu = float("inf")
                for _ in range(a.repeat):
                    t0, c0 = time.perf_counter(), _cpu_seconds()
                    with open(os.devnull, "w") as quiet:
                        header = preprocess(opts, log=quiet)
                    if time.perf_counter() - t0 < secs:
                        secs, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
                rate = header.corpus["lines"] / secs
                base = base or rate
                print(f"{processor:<10} {n:>9} {header.corpus['lines']:>7} {header.instances_num:>9} {secs:>8.2f} {cpu:>6.2f} "
                      f"{rate:>8.0f} {rate / base:>6.2f}x", flush=True)


def _cpu_seconds():
    """CPU time of this process and its finished children (the workers): if it stays flat while the
    wall time does not drop with more processes, the machine had no idle core to give."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    run_cli(main)
