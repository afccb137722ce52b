"""The compactor-bearing components a WID config names: encoder "wid_transformer", target "wid_mlm",
and the embedding (chosen by model_builder when the config has a wid block).

Each is the ordinary component with its nn.Linear layers replaced by CompactedLinear and its
LayerNorms by MaskedLayerNorm, so the forward code and every teacher key stay the same; only
`compactor_in`/`compactor_out` and the `wid_mask.*` buffers are new (docs/wid.md: "The config surface").
"""
import torch
import torch.nn as nn

from tencentpretrain.embeddings.embedding import Embedding
from tencentpretrain.encoders.transformer_encoder import TransformerEncoder
from tencentpretrain.errors import UserError
from tencentpretrain.registry import ENCODERS, TARGETS
from tencentpretrain.targets.mlm_target import MlmTarget
from tencentpretrain.wid.compactor import CompactedLinear, compact, scatter_cols
from tencentpretrain.wid.layer_norm import MaskedLayerNorm


def _fold(cfg, what):
    if cfg.wid is None:
        raise UserError(f"the {what} is WID's compactor-bearing variant and needs a 'wid' block in the model "
                        f"config (see models/wid/*.json)")
    return cfg.wid.fold


@ENCODERS.register("wid_transformer")
class WidTransformerEncoder(TransformerEncoder):
    """TransformerEncoder with a compactor pair on Q, K, V, the attention output and both FFN linears."""

    def __init__(self, cfg):
        super().__init__(cfg)
        fold = _fold(cfg, "encoder 'wid_transformer'")
        for layer in self.transformer:
            attn, ffn = layer.self_attn, layer.feed_forward
            attn.linear_layers = nn.ModuleList(CompactedLinear.like(l, fold=fold) for l in attn.linear_layers)
            attn.final_linear = CompactedLinear.like(attn.final_linear, fold=fold)
            ffn.linear_1 = CompactedLinear.like(ffn.linear_1, fold=fold)  # R acts before the activation
            ffn.linear_2 = CompactedLinear.like(ffn.linear_2, fold=fold)
            layer.layer_norm_1 = MaskedLayerNorm.like(layer.layer_norm_1)
            layer.layer_norm_2 = MaskedLayerNorm.like(layer.layer_norm_2)
        if self.layer_norm is not None:
            self.layer_norm = MaskedLayerNorm.like(self.layer_norm)


@TARGETS.register("wid_mlm")
class WidMlmTarget(MlmTarget):
    """The MLM head with compactors; stored as `target.mlm.*` so teacher keys load unchanged."""
    key_name = "mlm"

    def __init__(self, cfg):
        super().__init__(cfg)
        fold = _fold(cfg, "target 'wid_mlm'")
        self.linear_1 = CompactedLinear.like(self.linear_1, fold=fold)  # R acts before the activation
        self.layer_norm = MaskedLayerNorm.like(self.layer_norm)
        # The decoder's output is the vocabulary, never pruned: an input-side compactor only.
        self.linear_2 = CompactedLinear.like(self.linear_2, compact_out=False, fold=fold)


class CompactedEmbedding(Embedding):
    """Word + position + segment, then the output-side compactor C_emb, then the (masked) LayerNorm.

    C_emb is applied to the summed activations: folding it into the tables would cost V*H*H."""

    def __init__(self, cfg, names):
        super().__init__(cfg, names)
        self.compactor_out = nn.Parameter(torch.eye(cfg.emb_size))
        if self.layer_norm is not None:
            self.layer_norm = MaskedLayerNorm.like(self.layer_norm)
        self.groups = (None,)

    def reset_compactors(self):
        with torch.no_grad():
            self.compactor_out.copy_(torch.eye(self.compactor_out.shape[0]))

    def forward(self, src, seg):
        out = self.embed(src, seg)
        alive = self.groups[0].active() if self.groups[0] is not None else None
        dtype = out.dtype
        out = compact(out, self.compactor_out, rows=alive)
        if alive is not None:
            out = scatter_cols(out, alive, self.compactor_out.shape[0])
        out = out.to(dtype)
        if self.layer_norm is not None:
            out = self.layer_norm(out)
        return self.dropout(out)
