import torch.nn as nn

from tencentpretrain.layers.layer_norm import build_layernorm
from tencentpretrain.layers.masks import causal_mask, padding_mask
from tencentpretrain.layers.transformer import TransformerLayer
from tencentpretrain.registry import ENCODERS


@ENCODERS.register("transformer")
class TransformerEncoder(nn.Module):
    """A stack of transformer layers. Keys: encoder.transformer.<L>.*, encoder.layer_norm (pre-LN)."""

    def __init__(self, cfg):
        super().__init__()
        self.mask = cfg.mask
        # Factorised embeddings (ALBERT-style): project emb_size up to hidden_size.
        self.linear = nn.Linear(cfg.emb_size, cfg.hidden_size) if cfg.emb_size != cfg.hidden_size else None
        self.transformer = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.layers_num))
        self.layer_norm = build_layernorm(cfg.layernorm, cfg.hidden_size, cfg.eps) \
            if cfg.layernorm_positioning == "pre" else None

    def forward(self, emb, seg):
        mask = causal_mask(seg) if self.mask == "causal" else padding_mask(seg)
        hidden = emb if self.linear is None else self.linear(emb)
        for layer in self.transformer:
            hidden = layer(hidden, mask)
        return hidden if self.layer_norm is None else self.layer_norm(hidden)
