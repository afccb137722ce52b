"""The pull that drives masked entries to zero (docs/wid.md, "The penalty"), optimizer-agnostic.

The reference replaces the task gradient of masked entries by lambda * w and edits Adam's first
moment so that the step becomes about lr * lambda * w: an exponential decay at rate lr * lambda per
step, which ties it to one optimizer and breaks under loss scaling and accumulation. We get that
decay without touching the optimizer:

  after_backward (once per optimizer step, gradients complete, unscaled, all-reduced):
      the task gradient of masked entries is set to 0, so the optimizer sees nothing to follow;
  after the optimizer step:
      masked entries are multiplied by (1 - lr_c * lambda), lr_c the compactors' current lr;
      once their accumulated factor falls below `zero_below` they are set to exactly 0 and stay
      there (re-zeroed after every step, so leftover optimizer momentum cannot revive them).

Differences from the reference: the pull is not divided by Adam's running gradient scale (ours
is a plain decoupled decay, like AdamW's weight decay), and the LayerNorm entries of masked
coordinates decay at the compactor rate (the reference pulls them at the teacher's 1e-6 lr, so
they barely move; the merge drops them either way). Both operations act on the parameters the
same way on every rank, so data-parallel copies stay identical.
"""
import torch


def _along(vec, p, axis):
    """`vec` shaped to broadcast along `axis` of `p` (rows of R, columns of L, a LayerNorm vector)."""
    if p.dim() == 1:
        return vec
    return vec.view(-1, 1) if axis == 0 else vec.view(1, -1)


@torch.no_grad()
def mask_gradients(groups):
    for group in groups:
        group.ensure_fresh()
        if group.all_kept:
            continue
        for p, axis, _ in group.params():
            if p.grad is not None:
                p.grad.mul_(_along(group.keep_float.to(p.grad.dtype), p, axis))


@torch.no_grad()
def decay_masked(groups, rate, zero_below):
    """One step of the pull; returns True when some coordinate died (the fold set changed)."""
    factor = max(0.0, 1.0 - rate)
    died = False
    for group in groups:
        group.ensure_fresh()
        if group.all_kept:
            continue
        masked = ~group.keep
        decay = torch.where(masked, group.decay * factor, group.decay)
        decay = torch.where(masked & (decay < zero_below), torch.zeros_like(decay), decay)
        newly_dead = bool(((decay == 0) & (group.decay > 0)).any())
        mult = torch.where(group.keep, torch.ones_like(decay), torch.where(decay > 0, factor, 0.0))
        for p, axis, _ in group.params():
            p.mul_(_along(mult.to(p.dtype), p, axis))
        group.decay.copy_(decay)
        if newly_dead:
            group.refresh()
            died = True
    return died
