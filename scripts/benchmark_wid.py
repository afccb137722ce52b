"""WID training step time and memory, relative to plain MLM training of the same teacher.

    python scripts/benchmark_wid.py                      # bert-small and bert-base widths, 2k/8k/16k tokens
    python scripts/benchmark_wid.py --widths small --tokens 2048 --precisions fp32 --steps 1

One step = forward, backward, AdamW step (and WID's penalty hooks), on random tokens with 15% of
positions predicted (vocabulary 30522, so the MLM decoder is part of both). Plain and WID steps
alternate in one process per row and the fastest of --steps rounds counts, so load from other
processes hurts both alike. Printed: step-time ratio WID / plain (wall clock, and process CPU time),
and the memory ratio of parameters + gradients + Adam state (exact bytes; activations not counted), also
per process of a 2-process run with --zero_optimizer (Adam state sharded: training/zero.py's assignment)
against the unsharded plain step.
Masks are all open (step 0, the most expensive point: later the fold covers kept rows/columns only).

Guide: docs/performance.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

WIDTHS = {  # name -> (hidden, heads, ffn, layers); base uses fewer layers by default (--base_layers)
    "small": (512, 8, 2048, 4),
    "base": (768, 12, 3072, 12),
}


def model_config(width, layers, wid, vocab_size, seq_length, fold, compactors_only=False):
    hidden, heads, ffn, _ = WIDTHS[width]
    cfg = {"emb_size": hidden, "hidden_size": hidden, "heads_num": heads, "feedforward_size": ffn,
           "layers_num": layers, "max_seq_length": seq_length, "vocab_size": vocab_size, "dropout": 0.1,
           "tie_weights": True, "encoder": "transformer", "target": ["mlm"]}
    if wid:
        cfg.update(encoder="wid_transformer", target=["wid_mlm"],
                   wid={"target_hidden_size": hidden // 2, "fold": fold, "compactors_only": compactors_only})
    return cfg


def build(spec, wid):
    import torch

    from tencentpretrain.config import load_model_config
    from tencentpretrain.model_builder import build_model
    from tencentpretrain.training.optim import build_optimizer, build_param_groups

    torch.manual_seed(0)
    cfg = load_model_config(None, model_config(spec["width"], spec["layers"], wid, spec["vocab_size"],
                                               spec["seq_length"], spec["fold"], spec.get("compactors_only", False)))
    model = build_model(cfg).train()
    callbacks, claims = [], []
    if wid:
        from tencentpretrain.wid import build_wid_plugin
        callbacks, claims = build_wid_plugin(model, cfg)
    opt = build_optimizer(build_param_groups(model, 1e-4, 0.01, claims), lr=1e-4)  # as the trainer's
    return model, callbacks, opt


def train_step(model, callbacks, opt, batch, dtype, step):
    import torch
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        loss = model(batch).loss
    loss.backward()
    for cb in callbacks:
        cb.after_backward(optimizer=opt)
    opt.step()
    opt.zero_grad(set_to_none=True)
    for cb in callbacks:
        cb.on_step_end(None, step)
    return time.perf_counter() - start, time.process_time() - cpu_start


def worker(spec):
    """Plain and WID steps alternate in this process, so both see the same machine load; the
    fastest of `steps` rounds counts (other load only ever adds time). Prints a JSON line."""
    import torch

    from tencentpretrain.training.zero import state_bytes_per_rank

    torch.manual_seed(0)
    batch_size = spec["tokens"] // spec["seq_length"]
    src = torch.randint(5, spec["vocab_size"], (batch_size, spec["seq_length"]))
    tgt = torch.where(torch.rand(src.shape) < 0.15, src, torch.full_like(src, -100))
    batch = {"src": src, "seg": torch.ones_like(src), "tgt_mlm": tgt}
    warm = {k: v[:1] for k, v in batch.items()}  # a one-sequence step allocates the optimizer state
    dtype = torch.bfloat16 if spec["precision"] == "bf16" else None
    runs = {kind: build(spec, kind == "wid") for kind in ("plain", "wid")}
    result = {}
    for kind, run in runs.items():
        train_step(*run, warm, dtype, 1)
        params, groups = list(run[0].parameters()), run[2].param_groups
        result[kind] = {"wall": [], "cpu": [], "params": sum(p.numel() for p in params),
                        # weight, and for trained ones a gradient and Adam's two moments
                        "state_bytes": state_bytes_per_rank(params, groups)[0],
                        # the same per process of 2 with --zero_optimizer (moments of its share only): the larger
                        "state_bytes_zero2": max(state_bytes_per_rank(params, groups, 2))}
    for step in range(2, spec["steps"] + 2):
        for kind, run in runs.items():
            wall, cpu = train_step(*run, batch, dtype, step)
            result[kind]["wall"].append(wall)
            result[kind]["cpu"].append(cpu)
    for r in result.values():
        r["wall"], r["cpu"] = min(r["wall"]), min(r["cpu"])
    print(json.dumps(result))


def measure(spec):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_worker", json.dumps(spec)],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"worker failed for {spec}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", nargs="+", choices=sorted(WIDTHS), default=["small", "base"],
                   help="model widths to measure")
    p.add_argument("--tokens", type=int, nargs="+", default=[2048, 8192, 16384], help="tokens per step")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"],
                   help="fp32 and/or bf16 autocast")
    p.add_argument("--base_layers", type=int, default=1, help="layers for the base width (12 in BERT-base)")
    p.add_argument("--small_layers", type=int, default=2, help="layers for the small width")
    p.add_argument("--seq_length", type=int, default=128, help="tokens per sequence")
    p.add_argument("--vocab_size", type=int, default=30522, help="vocabulary size of the synthetic model")
    p.add_argument("--steps", type=int, default=2, help="timed rounds per row (after a one-sequence warm-up)")
    p.add_argument("--fold", choices=("auto", "weights", "activations"), default="auto",
                   help="WID fold mode (wid block 'fold')")
    p.add_argument("--compactors_only", action="store_true",
                   help="WID with wid.compactors_only: the teacher's weights frozen (no gradient, no Adam state)")
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        return worker(json.loads(args._worker))
    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, seq_length {args.seq_length}, "
          f"vocab {args.vocab_size}, fold={args.fold}; WID target = half width; best of {args.steps} rounds")
    print(f"{'width':<6} {'layers':>6} {'prec':<5} {'tokens':>6} {'plain s':>8} {'WID s':>8} {'time x':>7} "
          f"{'cpu x':>6} {'memory x':>9} {'zero/2 x':>9}")
    for width in args.widths:
        layers = args.base_layers if width == "base" else args.small_layers
        for precision in args.precisions:
            for tokens in args.tokens:
                r = measure(dict(width=width, layers=layers, precision=precision, tokens=tokens, steps=args.steps,
                                 seq_length=args.seq_length, vocab_size=args.vocab_size, fold=args.fold,
                                 compactors_only=args.compactors_only))
                plain, wid = r["plain"], r["wid"]
                print(f"{width:<6} {layers:>6} {precision:<5} {tokens:>6} {plain['wall']:>8.3f} {wid['wall']:>8.3f} "
                      f"{wid['wall'] / plain['wall']:>7.2f} {wid['cpu'] / plain['cpu']:>6.2f} "
                      f"{wid['state_bytes'] / plain['state_bytes']:>9.2f} "
                      f"{wid['state_bytes_zero2'] / plain['state_bytes']:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
