"""What a WID mask strategy declares, and the cuts the built-in ones share.

A strategy decides how the attention width shrinks (the groups cut "by head": every A.l, and the
stream S under `importance: reference`); the FFN, MLM and free-stream groups are cut coordinate by
coordinate whatever the strategy. It answers four questions:

    student_heads   the geometry: the student's (heads, head size) for a target hidden size, or a
                    UserError naming the nearest reachable widths (callers use heads_for, which checks it)
    stages          the stage plan: in how many stages the by-head groups reach their target
    masked_units    how many units (dims per head, whole heads, ...) are masked a fraction of the way
    select          which ones, given an importance score per coordinate

The rest is shared by WID training and magnitude pruning (groups.py, schedule.py, merge.py, pruning.py):
the stage timing, the importance scores, the fold, and the attention-scale fix when the head size changes.
"""
import torch

from tencentpretrain.errors import UserError


class MaskStrategy:
    name = None  # the registered name, set by get_strategy (for messages)

    def student_heads(self, hidden, heads, head_size, target, what="wid.target_hidden_size", where=None):
        """(student heads, student head size) with heads * head size == target, or a UserError."""
        raise NotImplementedError

    def stages(self, heads, target_heads, wid):
        """Number of stream/attention stages (the WID schedule spaces them wid.attention_stage_interval
        mask updates apart)."""
        raise NotImplementedError

    def masked_units(self, group, fraction, geometry):
        """How many units of by-head `group` are masked `fraction` (0..1) of the way to the target."""
        raise NotImplementedError

    def select(self, group, score, count):
        """The new keep mask of by-head `group`: `count` units masked, the already masked ones among them."""
        raise NotImplementedError

    def heads_for(self, hidden, heads, head_size, target, what="wid.target_hidden_size", where=None):
        """student_heads, checked: what callers use (plan_geometry, magnitude pruning)."""
        t_heads, t_d = self.student_heads(hidden, heads, head_size, target, what, where)
        if t_heads * t_d != target:
            raise RuntimeError(f"mask strategy '{self.name}' planned {t_heads} heads of {t_d} for a hidden size "
                               f"of {target}; heads x head size must equal it")
        return t_heads, t_d

    # Helpers for subclasses.
    def require_multiple(self, target, step, hidden, reason, what, where):
        """Refuse a target that is not a multiple of `step` (between step and hidden), naming the nearest."""
        if target % step:
            near = nearest_multiples(target, step, step, hidden)
            prefix = f"{where}: " if where else ""
            raise UserError(f"{prefix}strategy '{self.name}' {reason}, so {what} must be a multiple of {step}; "
                            f"{target} is not. Nearest reachable: {' or '.join(map(str, near))}")


def nearest_multiples(value, step, low, high):
    below = max(low, (value // step) * step)
    above = min(high, below + step)
    return sorted({below, above})


def ranked(group, score):
    """`score` with the already masked coordinates first in any ascending order (so masks only grow).
    Kept in its own precision: float64 magnitude scores are not rounded to float32."""
    score = score.to(torch.promote_types(score.dtype, torch.float32))
    return score.masked_fill(~group.keep, float("-inf"))


def mask_lowest(group, score, unit, count):
    """Mask the `count` lowest-scoring coordinates of every chunk of `unit` coordinates (unit = group
    size: the lowest anywhere); ties go to the lower index."""
    keep = torch.ones_like(group.keep)
    rows = ranked(group, score).view(-1, unit)
    order = torch.argsort(rows, dim=1, stable=True)[:, :count]
    keep.view(-1, unit).scatter_(1, order, False)
    return keep


def mask_lowest_chunks(group, score, unit, count):
    """Mask the `count` chunks of `unit` coordinates with the lowest summed score, whole."""
    keep = torch.ones_like(group.keep)
    per_chunk = ranked(group, score).view(-1, unit).sum(1)
    order = torch.argsort(per_chunk, stable=True)[:count]
    keep.view(-1, unit)[order] = False
    return keep
