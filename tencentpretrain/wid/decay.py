"""How far the masked entries still are from dead, and how long the pull needs to get them there.

A masked coordinate's entries are multiplied by (1 - lr_c * l2_lambda) per optimizer step (penalty.py);
its group's `decay` buffer holds the product so far. Once that falls below `wid.zero_below` (1e-3 by
default) the entries are set to exactly 0: the coordinate is "dead". Merging drops masked coordinates,
so merging one that is still alive changes the function (up to ~0.5 in the logits on the tiny configs):
`live_masked` finds them, `steps_to_die` says how long the pull still needs, and `schedule_decay` checks
before training that a run leaves enough steps after its last mask update.
"""
import math

from tencentpretrain.wid.groups import groups_of


def steps_to_die(factor, rate, threshold):
    """Optimizer steps for `factor` to fall below `threshold` at `factor *= 1 - rate` per step
    (math.inf when the rate is 0: the lr is 0, e.g. at the end of a linear schedule)."""
    if factor < threshold or factor <= 0:
        return 0
    if rate >= 1:
        return 1
    if rate <= 0:
        return math.inf
    return max(1, math.ceil(math.log(threshold / factor) / math.log1p(-rate)))


def live_masked(model, threshold):
    """[(group name, how many masked coordinates are alive, their largest decay factor, their largest
    absolute entry)] for every group with masked coordinates whose factor is >= threshold (> 0)."""
    out = []
    for g in groups_of(model):
        alive = ~g.keep & (g.decay > 0) & (g.decay >= threshold)
        if not bool(alive.any()):
            continue
        magnitude = 0.0
        for p, axis, _ in g.params():
            part = p.detach()[:, alive] if p.dim() == 2 and axis == 1 else p.detach()[alive]
            magnitude = max(magnitude, float(part.abs().max()))
        out.append((g.name, int(alive.sum()), float(g.decay[alive].max()), magnitude))
    return out


def schedule_decay(wid, last_update, total_steps, lr_at):
    """The decay factor left at `total_steps` on the coordinates masked at the last mask update
    (`last_update`), with `lr_at(s)` the compactors' lr of the step taken after s steps."""
    log_factor = 0.0
    for s in range(last_update, total_steps):
        rate = lr_at(s) * wid.l2_lambda
        if rate >= 1:
            return 0.0
        log_factor += math.log1p(-rate)
    return math.exp(log_factor)
