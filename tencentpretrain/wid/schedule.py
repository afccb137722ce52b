"""When masks grow, by how much, and which coordinates go (docs/wid.md).

Mask updates happen at optimizer steps w_step, 2*w_step, ...; update u sets
  FFN and MLM groups       masked = (size - target) * min(u, ffn_stages) / ffn_stages
  stream S, attention A_l  stage a = min(u // attention_stage_interval, stages), masked grows linearly
                           with a; the mask strategy (wid/strategies) sets the number of stages and,
                           for the groups cut by head, what a unit is and which go: `dim` takes the
                           same number of dims from every head, `head` one whole head per stage. S is
                           cut freely (its lowest scores anywhere) unless `importance: reference`,
                           which cuts it in head-sized chunks like the attention width, as the
                           reference code does.
Masks only grow: coordinates masked earlier stay masked (their compactors are being pulled to zero,
so they would lose any re-ranking anyway, and a dead coordinate is exactly zero).
"""
import torch

from tencentpretrain.wid.strategies.base import mask_lowest


def is_update_step(step, wid, geometry):
    return step > 0 and step % wid.w_step == 0 and step <= geometry.schedule_steps


def stage_fraction(group, update, wid, geometry):
    """Fraction of the way from the teacher width to the target at mask update number `update`."""
    if group.kind in ("ffn", "mlm"):
        return min(update, wid.ffn_stages) / wid.ffn_stages
    stages = geometry.attention_stages
    return min(update // wid.attention_stage_interval, stages) / stages


def masked_count(group, update, wid, geometry):
    """How many dims (or, for groups cut by head, units of its strategy) of `group` are masked after `update`."""
    return count_at(group, stage_fraction(group, update, wid, geometry), geometry)


def count_at(group, fraction, geometry):
    """How many dims (or strategy units) of `group` are masked `fraction` (0..1) of the way to its target."""
    if group.by_head:  # attention groups; S under `importance: reference`
        return group.strategy.masked_units(group, fraction, geometry)
    return int(((group.size - group.target) * fraction) + 1e-9)


def _column_norms_sq(p, axis):
    p = p.detach().float()
    return p.square().sum(0) if axis == 1 else p.square().sum(1)


def importance(group, rule="group"):
    """Score per coordinate: squared L2 norm of its compactor vectors (columns of L, rows of R),
    summed over every compactor of the group ("group") or read from one ("reference": S from layer
    0's V-input L, A_l from the attention-output L, F_l from the FFN-out L, M from the decoder's L)."""
    if rule == "reference" and group.reference is not None:
        module, name, axis = group.reference
        return _column_norms_sq(getattr(module, name), axis)
    score = torch.zeros(group.size, device=group.keep.device)
    for p, axis, is_compactor in group.params():
        if is_compactor:
            score += _column_norms_sq(p, axis)
    return score


def weight_magnitude(group, counted=None):
    """Score per coordinate from the weights the compactors sit on (one-shot magnitude pruning): the
    squared L2 norm of its slice of each of the group's matrices divided by that matrix's squared norm,
    summed, in float64 (every matrix has the same say, so the 30k-row word table does not outvote the
    layers). `counted(module, name)`: whether a matrix counts (pruning: those the checkpoint supplied)."""
    score = torch.zeros(group.size, dtype=torch.float64)
    for module, name, axis in group.weights():
        if counted is not None and not counted(module, name):
            continue
        w = getattr(module, name).detach().double()
        score += w.pow(2).sum(1 - axis) / w.pow(2).sum().clamp_min(1e-30)
    return score


def select(group, score, count):
    """The new keep mask: the old masked coordinates plus the lowest-scoring kept ones, so that `count`
    dims are masked (groups cut by head: `count` units of the group's strategy, chosen by it)."""
    if group.by_head:
        return group.strategy.select(group, score, count)
    return mask_lowest(group, score, group.size, count)
