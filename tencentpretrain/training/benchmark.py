"""Pretraining throughput: the real Trainer loop (forward, backward, clipping, AdamW, schedule) on
synthetic batches, timed after a few warmup steps."""
import time

import torch

from tencentpretrain.constants import IGNORE_INDEX
from tencentpretrain.training.callbacks import Callback
from tencentpretrain.training.trainer import TrainConfig, Trainer


class SyntheticBatches:
    """Full-length BERT batches: two segments, 15% MLM targets, next-sentence labels."""

    def __init__(self, vocab_size, batch_size, seq_length, seed=0):
        g = torch.Generator().manual_seed(seed)
        src = torch.randint(5, vocab_size, (batch_size, seq_length), generator=g)
        seg = torch.ones_like(src)
        seg[:, seq_length // 2:] = 2
        tgt = torch.where(torch.rand(src.shape, generator=g) < 0.15, src, torch.full_like(src, IGNORE_INDEX))
        self.batch = {"src": src, "seg": seg, "tgt_mlm": tgt, "tgt_lm": torch.roll(src, -1, 1),
                      "tgt_sp": torch.randint(0, 2, (batch_size,), generator=g)}

    def __iter__(self):
        while True:
            yield self.batch


class _Clock(Callback):
    def __init__(self, warmup_steps):
        self.warmup_steps, self.start, self.end = warmup_steps, None, None

    def on_step_end(self, trainer, step):
        if step == self.warmup_steps:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def tokens_per_second(model, batch_size, seq_length, precision="fp32", steps=5, warmup_steps=2):
    """Positions processed per second by full training steps (one process)."""
    data = SyntheticBatches(model.cfg.vocab_size, batch_size, seq_length)
    clock = _Clock(warmup_steps)
    cfg = TrainConfig(total_steps=warmup_steps + steps, learning_rate=1e-4, precision=precision,
                      report_steps=10 ** 9)
    Trainer(model, data, cfg, callbacks=[clock], log=lambda *a, **k: None).fit()
    return steps * batch_size * seq_length / (clock.end - clock.start)
