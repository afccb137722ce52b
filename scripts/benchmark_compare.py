"""Side by side on this machine: this toolkit against TencentPretrain itself (given a checkout) and
Hugging Face `BertModel` (when `transformers` is installed), in one run.

    python scripts/benchmark.py --side_by_side --tencentpretrain /path/to/TencentPretrain [--threads 2]
    python scripts/benchmark.py --side_by_side --quick          # tiny sizes: checks that every part runs

Every measurement runs in a fresh subprocess (TencentPretrain's package is also called
`tencentpretrain`, so it cannot share a process with this one), and the implementations alternate
repetition by repetition so background load hits all alike; the median over --reps counts. A step's
time is (time at the end of step `warmup + steps`) - (time at the end of step `warmup`), divided by
`steps`: the long run minus the short run, so start-up and first-step allocations cancel.

Printed: pre-training tokens/s (fp32, bf16 autocast; TencentPretrain's own step: its model, its
AdamW, its scheduler, its per-step loss bookkeeping), encoder inference ms (BERT-base and a 192-wide
student, batch 1 and 32) against `BertModel`, WID step and memory against a dense step
(scripts/benchmark_wid.py), the merged 12x192 students against their 12x768 teacher, and 2 processes
x 1 thread against 1 process x 2 threads. TencentPretrain's code is imported from the given path at
run time; nothing of it is copied here.

Guide: docs/performance.md
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

BASE = dict(hidden=768, layers=12, heads=12, ffn=3072)
SHAPES = {  # name -> encoder shape (vocabulary 30522, 512 positions)
    "mini": dict(hidden=256, layers=4, heads=4, ffn=1024),
    "base": BASE,
    "student_dim": dict(hidden=192, layers=12, heads=12, ffn=768),   # WID `dim`: 12 heads of 16
    "student_head": dict(hidden=192, layers=12, heads=3, ffn=768),   # WID `head`: 3 heads of 64
    "tiny": dict(hidden=64, layers=2, heads=2, ffn=128),
}
VOCAB = 30522


# ---- workers (run in a subprocess; print one JSON line) -----------------------------------------
def _batch(batch_size, seq_length, vocab_size, seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(5, vocab_size, (batch_size, seq_length), generator=g)
    seg = torch.ones_like(src)
    seg[:, seq_length // 2:] = 2
    masked = torch.rand(src.shape, generator=g) < 0.15
    return src, seg, masked, torch.randint(0, 2, (batch_size,), generator=g)


def _our_config(shape, overrides=None):
    from tencentpretrain.config import load_model_config
    s = SHAPES[shape]
    cfg = load_model_config(os.path.join(ROOT, "models", "bert", "base_config.json"),
                            {"vocab_size": VOCAB, "emb_size": s["hidden"], "hidden_size": s["hidden"],
                             "heads_num": s["heads"], "feedforward_size": s["ffn"], "layers_num": s["layers"],
                             **(overrides or {})})
    return cfg


def _stamp_steps(step_fn, warmup, steps):
    """Per-step seconds: end of step warmup+steps minus end of step warmup, over steps."""
    stamps = []
    for _ in range(warmup + steps):
        step_fn()
        stamps.append(time.perf_counter())
    return (stamps[-1] - stamps[warmup - 1]) / steps


def _train_ours(env, spec):
    """Our Trainer on one fixed synthetic batch; rank 0 returns (and writes to spec["out"]) the step time."""
    import torch

    from tencentpretrain.constants import IGNORE_INDEX
    from tencentpretrain.model_builder import build_model
    from tencentpretrain.training.callbacks import Callback
    from tencentpretrain.training.trainer import TrainConfig, Trainer

    src, seg, masked, sp = _batch(spec["batch"], spec["seq"], VOCAB)
    batch = {"src": src, "seg": seg, "tgt_mlm": torch.where(masked, src, torch.full_like(src, IGNORE_INDEX)),
             "tgt_sp": sp}

    class Stamps(Callback):
        def __init__(self):
            self.stamps = []

        def on_step_end(self, trainer, step):
            self.stamps.append(time.perf_counter())

    def data():
        while True:
            yield batch

    torch.manual_seed(0)
    model = build_model(_our_config(spec["shape"]))
    cfg = TrainConfig(total_steps=spec["warmup"] + spec["steps"], learning_rate=1e-4, precision=spec["precision"],
                      report_steps=10 ** 9)
    clock = Stamps()
    Trainer(model, data(), cfg, env=env, callbacks=[clock], log=lambda *a, **k: None).fit()
    s = clock.stamps
    result = {"step_s": (s[-1] - s[spec["warmup"] - 1]) / spec["steps"]}
    if env.is_main and spec.get("out"):
        with open(spec["out"], "w") as f:
            json.dump(result, f)
    return result


def pretrain_ours(spec):
    from tencentpretrain.training import distributed
    if spec.get("procs", 1) == 1:
        return _train_ours(distributed.DistEnv(), spec)
    with socket.socket() as sock:  # data parallel on this node (gloo), `threads` each
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    distributed.run(functools.partial(_train_ours, spec=spec), world_size=spec["procs"],
                    gpu_ranks=list(range(spec["procs"])), master_ip=f"tcp://localhost:{port}", backend="gloo")
    with open(spec["out"]) as f:
        return json.load(f)


def pretrain_tencentpretrain(spec):
    """TencentPretrain's own CPU pre-training step (trainer.py: forward_propagation, backward, optimizer
    and scheduler step, zero_grad), its model and optimizer built by its own functions from its own
    argument parser (pretrain.py) and config file."""
    import torch
    path = os.path.abspath(spec["tencentpretrain"])
    os.chdir(path)  # it reads models/special_tokens_map.json relative to the working directory
    sys.path.insert(0, path)
    for name in [m for m in sys.modules if m == "tencentpretrain" or m.startswith("tencentpretrain.")]:
        del sys.modules[name]
    import tencentpretrain.trainer as tp_trainer
    from tencentpretrain.utils import str2tokenizer
    from tencentpretrain.utils.logging import init_logger
    from tencentpretrain.initialize import init_env
    captured = {}
    tp_trainer.train_and_validate = lambda args: captured.setdefault("args", args)
    import pretrain as tp_pretrain
    s = SHAPES[spec["shape"]]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        config = json.load(open(os.path.join(path, "models", "bert", "base_config.json")))
        config.update(emb_size=s["hidden"], hidden_size=s["hidden"], heads_num=s["heads"],
                      feedforward_size=s["ffn"], layers_num=s["layers"])
        json.dump(config, f)
    sys.argv = ["pretrain.py", "--output_model_path", os.devnull, "--config_path", f.name,
                "--vocab_path", os.path.join(path, "models", "google_uncased_en_vocab.txt"),
                "--batch_size", str(spec["batch"]),
                "--learning_rate", "1e-4", "--total_steps", "100000"]
    tp_pretrain.main()
    args = captured["args"]
    args.tokenizer = str2tokenizer[args.tokenizer](args)
    args.vocab = args.tokenizer.vocab
    args.logger = init_logger(args)
    args.local_rank = None
    init_env(args)
    torch.manual_seed(0)
    model = tp_trainer.init_model(args)[0]
    optimizer, scheduler, _ = tp_trainer.init_optimizer(args, model)
    trainer = tp_trainer.str2trainer["bert"](args)
    src, seg, masked, sp = _batch(spec["batch"], spec["seq"], len(args.vocab))
    batch = [src, torch.where(masked, src, torch.zeros_like(src)), sp, seg]  # its MLM gold: 0 = not predicted
    model.train()

    def step():
        loss = trainer.forward_propagation(batch, model)
        loss.backward()
        optimizer.step()
        scheduler.step()
        model.zero_grad()

    return {"step_s": _stamp_steps(step, spec["warmup"], spec["steps"])}


def infer(spec):
    """Milliseconds per encoder forward (embeddings + encoder) under inference_mode."""
    import torch
    src, seg, _, _ = _batch(spec["batch"], spec["seq"], VOCAB)
    s = SHAPES[spec["shape"]]
    torch.manual_seed(0)
    if spec["impl"] == "hf":
        from transformers import BertConfig, BertModel
        model = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                                     num_attention_heads=s["heads"], intermediate_size=s["ffn"]),
                          add_pooling_layer=False).eval()
        mask = torch.ones_like(src)

        def forward():
            return model(input_ids=src, token_type_ids=seg - 1, attention_mask=mask).last_hidden_state
    else:
        from tencentpretrain.model_builder import build_model
        model = build_model(_our_config(spec["shape"])).eval()

        def forward():
            return model.encode(src, seg)
    dtype = torch.bfloat16 if spec["precision"] == "bf16" else None

    def step():
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            forward()

    return {"step_s": _stamp_steps(step, spec["warmup"], spec["steps"])}


def worker(spec):
    import torch
    torch.set_num_threads(spec["threads"])
    if spec["kind"] == "infer":
        return infer(spec)
    if spec["impl"] == "tp":
        return pretrain_tencentpretrain(spec)
    return pretrain_ours(spec)


def measure(spec):
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_worker", json.dumps(spec)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"worker failed for {spec}:\n{out.stdout[-1000:]}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["step_s"]


def interleaved(specs, reps):
    """{key: median seconds}: every spec once per repetition, in turn."""
    times = {key: [] for key in specs}
    for _ in range(reps):
        for key, spec in specs.items():
            times[key].append(measure(spec))
    return {key: statistics.median(v) for key, v in times.items()}


# ---- the tables --------------------------------------------------------------------------------
def pretraining(args, common):
    print("\n== pre-training tokens/s (full steps; TencentPretrain has no CPU bf16, so bf16 is compared "
          "with its fp32) ==", flush=True)
    for shape, batch in args.pretrain:
        specs = {}
        for precision in ("fp32", "bf16"):
            specs[("ours", precision)] = dict(common, kind="pretrain", impl="ours", shape=shape, batch=batch,
                                              precision=precision)
        if args.tencentpretrain:
            specs[("tp", "fp32")] = dict(common, kind="pretrain", impl="tp", shape=shape, batch=batch,
                                         precision="fp32", tencentpretrain=args.tencentpretrain)
        t = interleaved(specs, args.reps)
        tps = {k: batch * args.seq_length / v for k, v in t.items()}
        line = f"  {shape} {batch}x{args.seq_length}: ours fp32 {tps[('ours', 'fp32')]:,.0f}, " \
               f"ours bf16 {tps[('ours', 'bf16')]:,.0f} tokens/s"
        if ("tp", "fp32") in tps:
            tp = tps[("tp", "fp32")]
            line += f"; TencentPretrain fp32 {tp:,.0f}: fp32 {tps[('ours', 'fp32')] / tp:.2f}x, " \
                    f"bf16 vs TP fp32 {tps[('ours', 'bf16')] / tp:.2f}x"
        print(line, flush=True)


def inference(args, common):
    have_hf = _has_transformers()
    print(f"\n== encoder inference, ms per forward, sequence {args.seq_length} ==" +
          ("" if have_hf else " (transformers not installed: no BertModel column)"), flush=True)
    for shape in args.infer_shapes:
        for batch in args.infer_batches:
            for precision in ("fp32", "bf16"):
                specs = {impl: dict(common, kind="infer", impl=impl, shape=shape, batch=batch, precision=precision)
                         for impl in (("ours", "hf") if have_hf else ("ours",))}
                t = interleaved(specs, args.reps)
                line = f"  {shape} batch {batch} {precision}: ours {t['ours'] * 1000:,.1f} ms"
                if have_hf:
                    line += f", BertModel {t['hf'] * 1000:,.1f} ms: {t['hf'] / t['ours']:.2f}x faster"
                print(line, flush=True)


def students(args, common):
    print(f"\n== merged students vs their teacher, encoder inference fp32, batch {args.student_batch} ==",
          flush=True)
    teacher = args.student_teacher
    specs = {shape: dict(common, kind="infer", impl="ours", shape=shape, batch=args.student_batch, precision="fp32")
             for shape in (teacher, *args.student_shapes)}
    t = interleaved(specs, args.reps)
    for shape in args.student_shapes:
        print(f"  {teacher} -> {shape}: {t[teacher] * 1000:,.1f} -> {t[shape] * 1000:,.1f} ms, "
              f"{t[teacher] / t[shape]:.1f}x", flush=True)


def data_parallel(args, common):
    print(f"\n== data parallel on CPU, {args.ddp_shape}: 2 processes x 1 thread vs 1 process x 2 threads ==",
          flush=True)
    batch = args.ddp_batch
    with tempfile.TemporaryDirectory() as tmp:
        base = dict(common, kind="pretrain", impl="ours", shape=args.ddp_shape, batch=batch, precision="fp32")
        specs = {"1x2": dict(base, threads=2), "2x1": dict(base, threads=1, procs=2, out=os.path.join(tmp, "r.json"))}
        t = interleaved(specs, args.reps)
    one = batch * args.seq_length / t["1x2"]
    two = 2 * batch * args.seq_length / t["2x1"]
    print(f"  1 process x 2 threads {one:,.0f} tokens/s; 2 processes x 1 thread {two:,.0f} tokens/s "
          f"({two / one:.2f}x; batch {batch} per process)", flush=True)


def wid(args):
    import benchmark_wid
    print(f"\n== WID step / dense step, bert-{args.wid_width} width, {args.wid_layers} layers, {args.wid_tokens} tokens "
          f"(scripts/benchmark_wid.py) ==", flush=True)
    for compactors_only in (False, True):
        for precision in ("fp32", "bf16"):
            r = benchmark_wid.measure(dict(width=args.wid_width, layers=args.wid_layers, precision=precision,
                                           tokens=args.wid_tokens, steps=args.reps, seq_length=args.seq_length,
                                           vocab_size=VOCAB, fold="auto", compactors_only=compactors_only))
            plain, w = r["plain"], r["wid"]
            what = "compactors_only (teacher frozen)" if compactors_only else "default (teacher trained)"
            print(f"  {what} {precision}: step {w['wall'] / plain['wall']:.2f}x, memory (params + grads + Adam) "
                  f"{w['state_bytes'] / plain['state_bytes']:.2f}x; per process of 2 with --zero_optimizer "
                  f"{w['state_bytes_zero2'] / plain['state_bytes']:.2f}x (dense sharded alike: "
                  f"{w['state_bytes_zero2'] / plain['state_bytes_zero2']:.2f}x)", flush=True)


def _has_transformers():
    import importlib.util
    return importlib.util.find_spec("transformers") is not None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tencentpretrain", default=None, metavar="PATH",
                   help="a TencentPretrain checkout (its pretrain.py and models/ are used); omitted: no TP column")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few steps: checks that everything runs")
    p.add_argument("--threads", type=int, default=2, help="torch threads per measurement")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions per figure (median counts)")
    p.add_argument("--warmup", type=int, default=2, help="steps before the clock starts (the short run)")
    p.add_argument("--steps", type=int, default=8, help="timed steps (long run minus short run)")
    p.add_argument("--seq_length", type=int, default=128, help="tokens per sequence")
    p.add_argument("--parts", nargs="+", default=["pretrain", "infer", "students", "wid", "ddp"],
                   choices=["pretrain", "infer", "students", "wid", "ddp"],
                   help="which tables to measure (default: all)")
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        print(json.dumps(worker(json.loads(args._worker))))
        return
    if args.tencentpretrain and not os.path.isfile(os.path.join(args.tencentpretrain, "pretrain.py")):
        from tencentpretrain.errors import UserError
        raise UserError(f"--tencentpretrain {args.tencentpretrain}: no pretrain.py there; give the root of a "
                        f"TencentPretrain checkout (git clone https://github.com/Tencent/TencentPretrain)")
    if args.quick:
        args.reps, args.warmup, args.steps, args.seq_length = 1, 1, 2, 16
        args.pretrain, args.infer_shapes, args.infer_batches = [("tiny", 2)], ["tiny"], [1, 2]
        args.student_teacher, args.student_shapes, args.student_batch = "tiny", ["tiny"], 2
        args.wid_width, args.wid_layers, args.wid_tokens = "small", 1, 64
        args.ddp_shape, args.ddp_batch = "tiny", 2
    else:
        args.pretrain, args.infer_shapes, args.infer_batches = [("mini", 16), ("base", 8)], ["base", "student_dim"], [1, 32]
        args.student_teacher, args.student_shapes, args.student_batch = "base", ["student_dim", "student_head"], 32
        args.wid_width, args.wid_layers, args.wid_tokens = "base", 12, 8192
        args.ddp_shape, args.ddp_batch = "mini", 16
    import torch
    print(f"torch {torch.__version__}, {args.threads} threads per measurement, median of {args.reps} interleaved "
          f"repetitions, {args.steps} timed steps after {args.warmup}" +
          (f", TencentPretrain from {args.tencentpretrain}" if args.tencentpretrain else
           ", no TencentPretrain checkout given (--tencentpretrain PATH)"), flush=True)
    common = dict(threads=args.threads, warmup=args.warmup, steps=args.steps, seq=args.seq_length)
    parts = {"pretrain": lambda: pretraining(args, common), "infer": lambda: inference(args, common),
             "students": lambda: students(args, common), "wid": lambda: wid(args),
             "ddp": lambda: data_parallel(args, common)}
    for name in args.parts:
        parts[name]()


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    from tencentpretrain.errors import run_cli
    run_cli(main)
