import torch.nn as nn

from tencentpretrain.constants import IGNORE_INDEX
from tencentpretrain.layers.activations import ACTIVATIONS
from tencentpretrain.layers.layer_norm import build_layernorm
from tencentpretrain.registry import TARGETS
from tencentpretrain.targets.target import masked_lm_loss


@TARGETS.register("mlm")
class MlmTarget(nn.Module):
    """Masked LM head. Keys: target.mlm.linear_1, target.mlm.layer_norm, target.mlm.linear_2."""

    def __init__(self, cfg):
        super().__init__()
        self.linear_1 = nn.Linear(cfg.hidden_size, cfg.emb_size)
        self.act = ACTIVATIONS[cfg.hidden_act]
        self.layer_norm = build_layernorm(cfg.layernorm, cfg.emb_size, cfg.eps)
        self.linear_2 = nn.Linear(cfg.emb_size, cfg.vocab_size)

    def logits(self, hidden):
        return self.linear_2(self.layer_norm(self.act(self.linear_1(hidden))))

    def forward(self, hidden, batch):
        gold = batch["tgt_mlm"]
        keep = gold != IGNORE_INDEX
        # Only the ~15% predicted positions go through the head: the vocabulary projection
        # is the most expensive matrix product of a small BERT.
        return masked_lm_loss(self.logits(hidden[keep]), gold[keep], "mlm")
