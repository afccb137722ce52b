"""Additive attention masks built from the segment ids (0 = padding)."""
import torch

NEG = -10000.0  # TencentPretrain's value; exp(-1e4) is 0 in fp32 and bf16


def padding_mask(seg, q_len=None):
    """[B, 1, Lq, Lk] additive mask hiding padded keys, or None when nothing is padded."""
    keep = seg > 0
    if bool(keep.all()):
        return None
    q_len = q_len or seg.shape[1]
    mask = (~keep)[:, None, None, :].to(torch.float32) * NEG
    return mask.expand(-1, 1, q_len, -1)


def causal_mask(seg):
    """[B, 1, L, L] additive mask hiding future positions and padded keys."""
    length = seg.shape[1]
    future = torch.ones(length, length, dtype=torch.bool, device=seg.device).triu(1)
    hide = future[None, None] | (seg <= 0)[:, None, None, :]
    return hide.to(torch.float32) * NEG
