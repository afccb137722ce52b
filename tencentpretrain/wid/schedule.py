"""When masks grow, by how much, and which coordinates go (WID.md section 4).

Mask updates happen at optimizer steps w_step, 2*w_step, ...; update u sets
  FFN and MLM groups       masked = (size - target) * min(u, ffn_stages) / ffn_stages
  stream S, attention A_l  stage a = min(u // attention_stage_interval, stages), masked grows linearly
                           with a: strategy `dim` takes the same number of dims from every head,
                           strategy `head` one whole head per stage. S is cut freely (its lowest scores
                           anywhere) unless `importance: reference`, which cuts it in head-sized chunks
                           like the attention width, as the reference code does.
Masks only grow: coordinates masked earlier stay masked (their compactors are being pulled to zero,
so they would lose any re-ranking anyway, and a dead coordinate is exactly zero).
"""
import torch


def is_update_step(step, wid, geometry):
    return step > 0 and step % wid.w_step == 0 and step <= geometry.schedule_steps


def stage_fraction(group, update, wid, geometry):
    """Fraction of the way from the teacher width to the target at mask update number `update`."""
    if group.kind in ("ffn", "mlm"):
        return min(update, wid.ffn_stages) / wid.ffn_stages
    stages = geometry.attention_stages
    return min(update // wid.attention_stage_interval, stages) / stages


def masked_count(group, update, wid, geometry):
    """How many dims (or, for whole-head masking, heads) of `group` are masked after `update`."""
    frac = stage_fraction(group, update, wid, geometry)
    if group.by_head:  # attention groups; S under `importance: reference`
        if group.whole_units:
            return int(((geometry.heads - geometry.target_heads) * frac) + 1e-9)
        return int(((geometry.head_size - geometry.target_head_size) * frac) + 1e-9)  # per head
    return int(((group.size - group.target) * frac) + 1e-9)


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


def select(group, score, count):
    """The new keep mask: the old masked coordinates plus the lowest-scoring kept ones, so that
    `count` dims (per head for `dim` attention groups) or `count` whole heads are masked."""
    score = score.float().masked_fill(~group.keep, float("-inf"))  # already masked sort first
    keep = torch.ones_like(group.keep)
    if group.by_head and group.whole_units:
        per_head = score.view(-1, group.unit).sum(1)
        order = torch.argsort(per_head, stable=True)[:count]
        keep.view(-1, group.unit)[order] = False
        return keep
    unit = group.unit if group.by_head else group.size
    rows = score.view(-1, unit)
    order = torch.argsort(rows, dim=1, stable=True)[:, :count]
    keep.view(-1, unit).scatter_(1, order, False)
    return keep
