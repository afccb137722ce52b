"""LayerNorm whose statistics cover the kept coordinates of its mask group only.

This is what makes the merge exact: the student's LayerNorm sees only the kept coordinates, so the
compacted model must normalise over the same set while masked ones are still decaying. The mask is
a float vector (1 kept, 0 masked), so the statistics are two masked reductions, no per-forward
indexing. With nothing masked, the teacher's own formula runs (bit-identical at step 0).
Keys stay `gamma`/`beta`; `kind` is "normal" (TencentPretrain: unbiased std, eps outside the root)
or "normal_torch" (nn.LayerNorm: biased variance, eps inside).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class MaskedLayerNorm(nn.Module):
    def __init__(self, hidden_size, kind="normal", eps=1e-6):
        super().__init__()
        self.kind, self.eps = kind, eps
        self.gamma = nn.Parameter(torch.ones(hidden_size))
        self.beta = nn.Parameter(torch.zeros(hidden_size))
        self.group = (None,)  # (MaskGroup,), set by groups.attach (a tuple: not a submodule)

    @classmethod
    def like(cls, norm):
        kind = "normal_torch" if type(norm).__name__ == "TorchLayerNorm" else "normal"
        new = cls(norm.gamma.shape[0], kind, norm.eps)
        with torch.no_grad():
            new.gamma.copy_(norm.gamma)
            new.beta.copy_(norm.beta)
        return new

    def forward(self, x):
        kept = self.group[0].kept_weights() if self.group[0] is not None else None
        if kept is None:
            if self.kind == "normal_torch":
                return F.layer_norm(x, self.gamma.shape, self.gamma, self.beta, self.eps)
            mean = x.mean(-1, keepdim=True)
            std = x.std(-1, keepdim=True)
            return self.gamma * (x - mean) / (std + self.eps) + self.beta
        k, n = kept
        # Statistics in fp32 even under bf16/fp16 autocast (not summed and rounded in bf16); the output has
        # the unmasked branch's dtype: F.layer_norm keeps the input's, the "normal" formula promotes to gamma's.
        dtype = x.dtype if self.kind == "normal_torch" else torch.promote_types(x.dtype, self.gamma.dtype)
        x = x.float()
        mean = (x * k).sum(-1, keepdim=True) / n
        centred = x - mean
        sq = (centred.square() * k).sum(-1, keepdim=True)
        if self.kind == "normal_torch":
            return (self.gamma * centred * torch.rsqrt(sq / n + self.eps) + self.beta).to(dtype)
        return (self.gamma * centred / (torch.sqrt(sq / max(n - 1, 1)) + self.eps) + self.beta).to(dtype)
