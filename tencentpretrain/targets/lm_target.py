import torch.nn as nn

from tencentpretrain.constants import IGNORE_INDEX
from tencentpretrain.registry import TARGETS
from tencentpretrain.targets.target import masked_lm_loss


@TARGETS.register("lm")
class LmTarget(nn.Module):
    """Next-token prediction. Key: target.lm.output_layer. Reads `tgt_lm`, or `tgt_out` after a decoder."""

    def __init__(self, cfg):
        super().__init__()
        self.output_layer = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=cfg.has_lmtarget_bias)

    def forward(self, hidden, batch):
        gold = batch["tgt_lm"] if "tgt_lm" in batch else batch["tgt_out"]
        keep = gold != IGNORE_INDEX
        return masked_lm_loss(self.output_layer(hidden[keep]), gold[keep], "lm")
