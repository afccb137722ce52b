from dataclasses import dataclass, field

import torch
import torch.nn as nn

from tencentpretrain.registry import TARGETS


@dataclass
class ModelOutput:
    loss: torch.Tensor
    metrics: dict = field(default_factory=dict)  # name -> (sum, count), summed over the batch


class Target(nn.Module):
    """The targets named in the config; the total loss is their sum.

    Each target is stored under its registry name (or the class's `key_name`, which lets a
    variant such as WID's compactor-bearing MLM head keep the checkpoint keys `target.mlm.*`).
    """

    def __init__(self, cfg):
        super().__init__()
        self.names = []
        for name in cfg.target:
            cls = TARGETS.get(name)
            key = getattr(cls, "key_name", name)
            setattr(self, key, cls(cfg))
            self.names.append(key)

    def forward(self, hidden, batch):
        loss, metrics = 0.0, {}
        for name in self.names:
            part, part_metrics = getattr(self, name)(hidden, batch)
            loss = loss + part
            metrics.update(part_metrics)
        return ModelOutput(loss, metrics)


def masked_lm_loss(logits, gold, prefix):
    """Cross-entropy and accuracy of `logits` [N, V] against `gold` [N] (N may be 0)."""
    n = gold.numel()
    if n == 0:  # no predicted position in this batch: a zero that still has a graph
        loss = logits.sum() * 0.0
        zero = torch.zeros((), device=logits.device)
        return loss, {f"{prefix}_loss": (zero, 0), f"{prefix}_acc": (zero, 0)}
    logits = logits.float()  # under bf16 autocast: the loss in fp32, and argmax is ~10x faster on fp32
    loss = nn.functional.cross_entropy(logits, gold)
    correct = (logits.detach().argmax(-1) == gold).sum()
    return loss, {f"{prefix}_loss": (loss.detach() * n, n), f"{prefix}_acc": (correct, n)}
