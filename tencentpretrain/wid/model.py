"""Turning a built model into a WID model, and loading its teacher."""
from tencentpretrain.model_io import load_model_weights
from tencentpretrain.wid.compactor import CompactedLinear
from tencentpretrain.wid.config import plan_geometry
from tencentpretrain.wid.groups import attach, groups_of
from tencentpretrain.wid.modules import CompactedEmbedding

WID_KEY_PARTS = ("compactor_in", "compactor_out", "wid_mask.")


def attach_wid(model):
    """Called by build_model after the default initialisation: compactors back to the identity
    (init_weights drew them from N(0, 0.02)), then the mask groups. Returns the groups."""
    geometry = plan_geometry(model.cfg)
    for module in model.modules():
        if isinstance(module, (CompactedLinear, CompactedEmbedding)):
            module.reset_compactors()
    wid = model.cfg.wid
    return attach(model, geometry, wid.strategy, stream_by_head=wid.importance == "reference")


def is_wid_key(key):
    return any(part in key for part in WID_KEY_PARTS)


def teacher_allowances(model):
    """(allow_missing, allow_unexpected) for load_model_weights when the source is a plain teacher:
    exactly the WID keys may be missing (listed in full, so nothing else slips through), and the
    teacher's next-sentence head may be left over (WID trains with the MLM loss only)."""
    return tuple(k for k in model.state_dict() if is_wid_key(k)), ("target.sp.",)


def load_teacher(model, path_or_sd, where=None):
    """Load teacher weights into a WID model; a checkpoint that already has compactors (a resumed or
    partly compressed run) loads as is. Anything else missing or mismatched is a UserError."""
    missing, unexpected = teacher_allowances(model)
    report = load_model_weights(model, path_or_sd, allow_missing=missing, allow_unexpected=unexpected, where=where)
    for group in groups_of(model):
        group.refresh()
    return report
