import torch
import torch.nn as nn

from tencentpretrain.registry import TARGETS
from tencentpretrain.targets.target import masked_lm_loss


@TARGETS.register("sp")
class SpTarget(nn.Module):
    """Sentence (next-sentence) prediction on the first token: target.sp.linear_1 (pooler), linear_2."""

    def __init__(self, cfg):
        super().__init__()
        self.linear_1 = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.linear_2 = nn.Linear(cfg.hidden_size, 2)

    def forward(self, hidden, batch):
        logits = self.linear_2(torch.tanh(self.linear_1(hidden[:, 0])))
        return masked_lm_loss(logits, batch["tgt_sp"], "sp")
