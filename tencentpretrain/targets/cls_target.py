import torch
import torch.nn as nn

from tencentpretrain.registry import TARGETS
from tencentpretrain.targets.target import masked_lm_loss


def pool(hidden, seg, pooling):
    """One vector per sequence: the first token, or mean/max over non-padding, or the last token."""
    if pooling == "first":
        return hidden[:, 0]
    keep = (seg > 0).unsqueeze(-1).to(hidden.dtype)
    if pooling == "mean":
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)
    if pooling == "max":
        return (hidden + (keep - 1) * 1e4).max(1).values
    last = (seg > 0).sum(1).clamp(min=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


@TARGETS.register("cls")
class ClsTarget(nn.Module):
    """Sequence classification: target.cls.linear_1 (tanh), target.cls.linear_2; reads `tgt_cls`."""

    def __init__(self, cfg):
        super().__init__()
        self.pooling = cfg.pooling
        self.linear_1 = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.linear_2 = nn.Linear(cfg.hidden_size, cfg.labels_num)

    def forward(self, hidden, batch):
        pooled = pool(hidden, batch["seg"], self.pooling)
        logits = self.linear_2(torch.tanh(self.linear_1(pooled)))
        return masked_lm_loss(logits, batch["tgt_cls"], "cls")
