"""LayerNorm in the two conventions converted checkpoints need (docs/converting.md, "LayerNorm convention")."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.Module):
    """TencentPretrain's LayerNorm: gamma * (x - mean) / (unbiased_std + eps) + beta."""

    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(hidden_size))
        self.beta = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.gamma * (x - mean) / (std + self.eps) + self.beta


class TorchLayerNorm(nn.Module):
    """nn.LayerNorm semantics (biased variance, eps inside the root), keys gamma/beta."""

    def __init__(self, hidden_size, eps=1e-12):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(hidden_size))
        self.beta = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x):
        return F.layer_norm(x, self.gamma.shape, self.gamma, self.beta, self.eps)


def build_layernorm(kind, hidden_size, eps):
    return (LayerNorm if kind == "normal" else TorchLayerNorm)(hidden_size, eps)
