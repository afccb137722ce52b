"""How far a Hugging Face export of a TencentPretrain-LayerNorm model is from the model itself.

A model trained with layernorm 'normal' (unbiased std, eps outside the square root) is exported as
nn.LayerNorm with rescaled gains (hf_bert.rescale_layernorm); what remains is where eps sits. Rather
than quote a bound, the export runs both on a few random inputs and prints the largest difference:
the model as trained, and the same weights in this toolkit's nn.LayerNorm convention ('normal_torch',
gains rescaled, eps converted), which computes exactly what `transformers` will (tests/test_convert_hf.py).
"""
import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from tencentpretrain.convert.hf_bert import MLM_DECODER, WORD, eps_between, rescale_layernorm
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_model_weights

BATCH, LENGTH, SEED = 4, 32, 0


@dataclass
class Deviation:
    hidden: float                 # max |difference| of the last hidden states
    hidden_scale: float           # max |value| of those hidden states, for scale
    mlm_logits: Optional[float]   # max |difference| of the MLM logits, when the model has that head
    batch: int
    length: int

    def describe(self):
        logits = "" if self.mlm_logits is None else f", {self.mlm_logits:.3g} in the MLM logits"
        return (f"layernorm deviation: max abs difference {self.hidden:.3g} in the last hidden states "
                f"(largest value {self.hidden_scale:.3g}){logits}, Hugging Face vs this model, on {self.batch} "
                f"random sequences of {self.length} tokens")


def _model(cfg, sd):
    model = build_model(cfg)
    load_model_weights(model, sd, allow_missing=("target.",), where="the exported weights")
    return model.eval()


def measure(sd, cfg, batch=BATCH, length=LENGTH, seed=SEED):
    """Deviation between `cfg` (layernorm 'normal') on `sd` and its nn.LayerNorm export, on random tokens.

    `sd` is one of our state dicts; only the encoder and the MLM head (if any) are run. The global RNG is
    left as it was (building the models draws from it).
    """
    keep = {k: v for k, v in sd.items() if k.startswith(("embedding.", "encoder.", "target.mlm."))}
    has_mlm = any(k.startswith("target.mlm.") for k in keep)
    if has_mlm and MLM_DECODER not in keep:
        keep[MLM_DECODER] = keep[WORD]
    base = dataclasses.replace(cfg, target=["mlm"], tie_weights=False, dropout=0.0, features={})
    as_hf = dataclasses.replace(base, layernorm="normal_torch",
                                layernorm_eps=eps_between(cfg.eps, cfg.hidden_size, "normal_torch"))
    length = min(length, cfg.max_seq_length)
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(1, cfg.vocab_size, (batch, length), generator=g)
    seg = torch.ones(batch, length, dtype=torch.long)
    seg[:, length // 2:] = 2
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        ours = _model(base, keep)
        theirs = _model(as_hf, rescale_layernorm(dict(keep), "normal_torch"))
        h_ours, h_theirs = ours.encode(src, seg), theirs.encode(src, seg)
        logits = None
        if has_mlm:
            logits = (ours.target.mlm.logits(h_ours) - theirs.target.mlm.logits(h_theirs)).abs().max().item()
    return Deviation(hidden=(h_ours - h_theirs).abs().max().item(), hidden_scale=h_ours.abs().max().item(),
                     mlm_logits=logits, batch=batch, length=length)
