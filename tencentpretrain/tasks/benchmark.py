"""Fine-tuning throughput (examples/s at a fixed sequence length) and, given a pre-trained model,
the accuracy it reaches on the shipped sentiment task (datasets/sentiment).

Guide: docs/performance.md
"""
import argparse
import os
import time

import torch

from tencentpretrain.config import load_model_config
from tencentpretrain.model_builder import init_weights
from tencentpretrain.resources import repo_root, resolve
from tencentpretrain.tasks.classification import ClassificationTask, SequenceTask
from tencentpretrain.tasks.cli import finetune
from tencentpretrain.tasks.engine import RunConfig, pick_device
from tencentpretrain.tasks.heads import Classifier
from tencentpretrain.training.optim import build_optimizer, build_param_groups
from tencentpretrain.utils.runtime import seed_everything


def throughput(config_path, seq_length=128, batch_size=32, steps=20, device="cpu", bf16=False, vocab_size=30522):
    """Training examples/s of a 2-label classifier on full-length random batches (after 3 warm-up steps)."""
    seed_everything(0)
    cfg = load_model_config(config_path, {"vocab_size": vocab_size})
    model = Classifier(cfg, 2)
    init_weights(model)
    model.to(device).train()
    optimizer = build_optimizer(build_param_groups(model, 2e-5, 0.01), lr=2e-5)
    run = RunConfig(bf16=bf16, device=device)
    task = SequenceTask()
    batch = {"src": torch.randint(1000, vocab_size, (batch_size, seq_length), device=device),
             "seg": torch.ones(batch_size, seq_length, dtype=torch.long, device=device),
             "label": torch.randint(0, 2, (batch_size,), device=device)}

    def step():
        with run.autocast():
            loss = task.loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--configs", nargs="+",
                        default=["models/bert/mini_config.json", "models/bert/small_config.json"],
                        help="model configs whose fine-tuning examples/s is measured")
    parser.add_argument("--seq_length", type=int, default=128, help="tokens per example")
    parser.add_argument("--batch_size", type=int, default=32, help="examples per step")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per config")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--pretrained_model_path", default=None,
                        help="a model pre-trained by the toolkit: also fine-tune it on datasets/sentiment")
    parser.add_argument("--config_path", default=None, help="the pre-trained model's config")
    parser.add_argument("--vocab_path", default=None, help="the pre-trained model's vocabulary")
    parser.add_argument("--baseline", action="store_true",
                        help="also fine-tune the same config from random weights, for comparison")
    parser.add_argument("--epochs_num", type=int, default=3, help="sentiment fine-tuning epochs")
    parser.add_argument("--learning_rate", type=float, default=5e-5, help="sentiment fine-tuning learning rate")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    threads = torch.get_num_threads() if device == "cpu" else None
    print(f"fine-tuning throughput, seq_length {args.seq_length}, batch {args.batch_size}, device {device}"
          + (f" ({threads} threads)" if threads else "") + (", bf16" if args.bf16 else ""))
    for config in args.configs:
        rate = throughput(resolve(config), args.seq_length, args.batch_size, args.steps, device, args.bf16)
        print(f"{os.path.basename(config)}: {rate:.1f} examples/s")
    if args.pretrained_model_path:
        runs = [("pre-trained", args.pretrained_model_path)] + ([("random init", None)] if args.baseline else [])
        for name, weights in runs:
            acc = sentiment_accuracy(weights, args, device)
            print(f"sentiment ({name}{': ' + weights if weights else ''}): test acc {acc['test']:.4f} "
                  f"(best dev acc {acc['dev']:.4f})")
    return 0


def sentiment_accuracy(weights, args, device):
    data = os.path.join(repo_root(), "datasets", "sentiment")
    argv = ["--config_path", args.config_path or "models/bert/mini_config.json",
            "--train_path", f"{data}/train.tsv", "--dev_path", f"{data}/dev.tsv", "--test_path", f"{data}/test.tsv",
            "--epochs_num", str(args.epochs_num), "--learning_rate", str(args.learning_rate), "--batch_size", "32",
            "--seq_length", "64", "--report_steps", "1000", "--device", device,
            "--output_model_path", os.path.join(os.environ.get("TMPDIR", "/tmp"), "benchmark_sentiment.bin")]
    argv += ["--pretrained_model_path", weights] if weights else []
    argv += ["--vocab_path", args.vocab_path] if args.vocab_path else []
    argv += ["--bf16"] if args.bf16 else []
    result = finetune(ClassificationTask, argv)
    return {"test": result["test"]["acc"], "dev": result["best"]["acc"]}
