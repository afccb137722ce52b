import torch.nn as nn

from tencentpretrain.layers.layer_norm import build_layernorm
from tencentpretrain.layers.masks import causal_mask, padding_mask
from tencentpretrain.layers.transformer import TransformerDecoderLayer
from tencentpretrain.registry import DECODERS


@DECODERS.register("transformer")
class TransformerDecoder(nn.Module):
    """Causal self-attention plus attention over the encoder memory. Keys: decoder.transformer_decoder.<L>.*"""

    def __init__(self, cfg):
        super().__init__()
        layers = cfg.decoder_layers_num or cfg.layers_num
        self.transformer_decoder = nn.ModuleList(TransformerDecoderLayer(cfg) for _ in range(layers))
        self.layer_norm = build_layernorm(cfg.layernorm, cfg.hidden_size, cfg.eps) \
            if cfg.layernorm_positioning == "pre" else None

    def forward(self, memory, src_seg, emb, tgt_seg):
        self_mask = causal_mask(tgt_seg)
        context_mask = padding_mask(src_seg, q_len=emb.shape[1])
        hidden = emb
        for layer in self.transformer_decoder:
            hidden = layer(hidden, memory, self_mask, context_mask)
        return hidden if self.layer_norm is None else self.layer_norm(hidden)
