"""Measuring a pre-trained model: masked-token accuracy on a held-out dataset, CPU latency, size.

MLM accuracy is comparable across models because the masks are fixed: the held-out dataset is read in
file order (no shuffling) and masked by the loader's seeded generator, (seed, epoch 0, instance index),
so every model answers exactly the same questions.
"""
import statistics
import time

import torch

from tencentpretrain.config import config_for_checkpoint
from tencentpretrain.constants import IGNORE_INDEX
from tencentpretrain.data.loader import DataLoader
from tencentpretrain.data.tokenizers import build_tokenizer
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_model_weights, load_state_dict_file


def load_model(config_path, model_path=None, overrides=None):
    """A model built from a config json and loaded from `model_path` (strict, except a next-sentence head
    the config does not have)."""
    sd = load_state_dict_file(model_path) if model_path else None
    cfg = config_for_checkpoint(config_path, sd or {}, overrides)  # table sizes from the checkpoint
    if cfg.vocab_size is None:
        cfg.vocab_size = build_tokenizer().vocab_size
    model = build_model(cfg)
    if sd is not None:
        load_model_weights(model, sd, allow_unexpected=("target.sp.",), where=model_path)
    return model.eval()


def count_parameters(model, prefixes=("embedding.", "encoder.")):
    """Distinct parameters whose names start with `prefixes` (default: what fine-tuning keeps, i.e. no
    pre-training head). Tied tensors count once."""
    seen, n = set(), 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if prefixes and not name.startswith(tuple(prefixes)):
            continue
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


@torch.inference_mode()
def mlm_accuracy(model, dataset_path, batch_size=32, seed=7, max_instances=None):
    """Masked-token accuracy and loss over a preprocess.py dataset (processor mlm or bert).

    Returns {"mlm_acc", "mlm_loss", "predictions", "instances", "seed"}. Deterministic: instances in
    file order, dynamic masks from `seed` (static datasets carry their own masks).
    """
    loader = DataLoader(dataset_path, batch_size, seed=seed, shuffle=False)
    n = loader.instances_num if max_instances is None else min(max_instances, loader.instances_num)
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for start in range(0, n, batch_size):
        batch = loader.collate(range(start, min(start + batch_size, n)))
        hidden = model.encode(batch["src"], batch["seg"])
        gold = batch["tgt_mlm"]
        keep = gold != IGNORE_INDEX
        logits = model.target.mlm.logits(hidden[keep]).float()
        loss_sum += torch.nn.functional.cross_entropy(logits, gold[keep], reduction="sum").item()
        correct += (logits.argmax(-1) == gold[keep]).sum().item()
        total += int(keep.sum())
    return {"mlm_acc": correct / max(total, 1), "mlm_loss": loss_sum / max(total, 1), "predictions": total,
            "instances": n, "seed": seed}


def _random_batch(vocab_size, batch_size, seq_length, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(1000, vocab_size, (batch_size, seq_length), generator=g)
    return src, torch.ones_like(src)


@torch.inference_mode()
def measure_latency(models, batch_sizes=(1, 32), seq_length=128, threads=2, repeats=10, warmup=2):
    """Median wall time (ms) of one encoder forward (embeddings + encoder, what a task model runs) per
    model and batch size, under torch.inference_mode with `threads` intra-op threads.

    `models` is {name: model}. Runs are interleaved (round-robin over the models, `repeats` rounds) so
    that load from other processes hits every model alike. Returns {name: {batch_size: ms}}.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = {name: {} for name in models}
        for b in batch_sizes:
            inputs = {name: _random_batch(m.cfg.vocab_size, b, seq_length) for name, m in models.items()}
            for name, m in models.items():
                m.eval()
                for _ in range(warmup):
                    m.encode(*inputs[name])
            times = {name: [] for name in models}
            for _ in range(repeats):
                for name, m in models.items():
                    start = time.perf_counter()
                    m.encode(*inputs[name])
                    times[name].append((time.perf_counter() - start) * 1000)
            for name in models:
                out[name][b] = statistics.median(times[name])
        return out
    finally:
        torch.set_num_threads(previous)
