"""One-shot magnitude pruning of a BERT to a smaller dense shape (the WID demo's baseline).

A pruned model is WID's mask groups (wid/groups.py) with their masks set once from the teacher's
weight norms instead of grown from trained compactors:
    S     the residual stream: embedding tables' columns, every LayerNorm on the stream, the input
          columns of Q/K/V, FFN-in and the MLM head dense, the output rows of attention-out and FFN-out
    A.l   layer l's attention width: Q/K/V output rows, attention-out input columns
    F.l   layer l's FFN width: FFN-in output rows, FFN-out input columns
    M     the MLM head width; with tie_weights the decoder is the word table, so M keeps S's coordinates
A coordinate's importance is the sum, over the weight matrices and embedding tables of its group, of
its slice's squared L2 norm divided by the tensor's squared norm (schedule.weight_magnitude). Each
group keeps its largest scores, cut as the WID mask strategy cuts it (wid/strategies): `dim` keeps every
head's strongest dims (all heads, narrower), `head` the strongest whole heads; S and F.l anywhere.
WID's merge then folds the model: with identity compactors that is the kept slices of the teacher's
weights, plus sqrt(new / old head size) folded into W_q, b_q when the heads narrow, so the pruned
attention scores equal the teacher's restricted to the kept dims.
"""
from dataclasses import dataclass, field

import torch

from tencentpretrain.config import config_for_checkpoint, config_path_beside, load_model_config
from tencentpretrain.errors import UserError
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_model_weights, load_state_dict_file, save_state_dict
from tencentpretrain.utils.io import write_json
from tencentpretrain.wid import schedule
from tencentpretrain.wid.config import plan_geometry
from tencentpretrain.wid.groups import groups_of
from tencentpretrain.wid.merge import check_heads, fold_model, fold_score_scale
from tencentpretrain.wid.model import teacher_allowances
from tencentpretrain.wid.strategies import get_strategy

SKIPPED = "target.sp."  # the pooler/next-sentence head reads a width no group tracks: the student is MLM only


@dataclass
class PruneResult:
    state_dict: dict
    config: dict                                  # the student's model config (a dict, json-ready)
    kept: dict = field(default_factory=dict)      # group name ("S", "A.0", "F.0", "M") -> kept indices
    dropped_keys: list = field(default_factory=list)  # heads the student cannot keep (next-sentence)


def check_prunable(cfg, hidden_size, feedforward_size, strategy):
    """The target widths for teacher `cfg`, checked: (feedforward_size, strategy object)."""
    H, heads, d, F = cfg.hidden_size, cfg.heads_num, cfg.head_size, cfg.feedforward_size
    if cfg.encoder != "transformer" or cfg.decoder is not None:
        raise UserError(f"cannot prune a '{cfg.encoder}' encoder{' with a decoder' if cfg.decoder else ''}: only "
                        f"BERT encoders with an MLM head are supported (prune before fine-tuning)")
    if cfg.emb_size != H:
        raise UserError(f"magnitude pruning needs emb_size == hidden_size (got {cfg.emb_size} and {H})")
    if heads * d != H:
        raise UserError(f"magnitude pruning needs heads_num * attention_head_size == hidden_size "
                        f"({heads} x {d} != {H})")
    if feedforward_size is None:
        feedforward_size = F * hidden_size // H
    if not 1 <= hidden_size <= H or not 1 <= feedforward_size <= F:
        raise UserError(f"target hidden {hidden_size} / feedforward {feedforward_size} must be between 1 and the "
                        f"model's {H} / {F}")
    strategy = get_strategy(strategy, where="strategy")
    strategy.heads_for(H, heads, d, hidden_size, what="the hidden size")
    return feedforward_size, strategy


def grouped_model(cfg, hidden_size, feedforward_size, strategy):
    """The teacher's architecture as a WID model aiming at the target widths (identity compactors,
    nothing masked yet). Built without touching the global random state."""
    d = cfg.to_dict()
    d.update(encoder="wid_transformer", target=["wid_mlm"],
             wid={"target_hidden_size": hidden_size, "target_feedforward_size": feedforward_size,
                  "strategy": strategy})
    with torch.random.fork_rng(devices=[]):
        return build_model(load_model_config(None, d))


@torch.no_grad()
def mask_by_magnitude(model, counted):
    """Set every group's mask once, at its target width, from the weights `counted(module, name)` accepts."""
    geometry = plan_geometry(model.cfg)
    groups = {g.name: g for g in groups_of(model)}
    for g in groups.values():
        score = schedule.weight_magnitude(g, counted)
        g.keep.copy_(schedule.select(g, score, schedule.count_at(g, 1.0, geometry)))
    if model.cfg.tie_weights:  # the decoder is the word table, whose columns are the stream
        groups["M"].keep.copy_(groups["S"].keep)
    for g in groups.values():
        g.refresh()
    check_heads(model, geometry)
    return geometry


def prune_state_dict(sd, cfg, hidden_size, feedforward_size=None, strategy="dim"):
    """Prune a BERT state dict (TencentPretrain keys) with config `cfg` (a ModelConfig) to `hidden_size`
    (residual stream and MLM head) and `feedforward_size` (default: scaled like the hidden size).

    strategy "dim" keeps all heads_num heads with hidden_size / heads_num dims each; "head" keeps
    hidden_size / head_size whole heads (any registered WID mask strategy works). Returns a PruneResult.
    """
    feedforward_size, strategy = check_prunable(cfg, hidden_size, feedforward_size, strategy)
    model = grouped_model(cfg, hidden_size, feedforward_size, strategy.name)
    own = model.state_dict()
    if any(v.dtype == torch.float64 for v in sd.values()):
        model.double()  # float64 weights are kept exactly
    missing, _ = teacher_allowances(model)
    # The model's keys the checkpoint lacks (an encoder without an MLM head) start from init and are left out.
    load_model_weights(model, {k: v for k, v in sd.items() if k in own}, allow_missing=missing + ("target.mlm.",))
    names = {id(m): name for name, m in model.named_modules()}

    def given(module, name):  # a matrix the checkpoint supplied (under this module's own key)
        return f"{names[id(module)]}.{name}" in sd

    geometry = mask_by_magnitude(model, given)
    folded = fold_model(model)
    dropped = [k for k in sd if k.startswith(SKIPPED)]
    unknown = [k for k in sd if k not in folded and not k.startswith(SKIPPED)]
    if unknown:
        raise UserError(f"cannot prune keys {unknown[:5]}{' ...' if len(unknown) > 5 else ''}: only BERT "
                        f"encoders with an MLM head are supported (prune before fine-tuning)")
    out = {k: folded[k].to(sd[k].dtype).contiguous() for k in sd if k in folded}
    fold_score_scale(out, cfg.layers_num, geometry)  # in the checkpoint's precision
    kept = {g.name: g.kept_index() for g in groups_of(model)
            if g.name != "M" or any(given(m, name) for m, name, _ in g.weights())}
    student = cfg.to_dict()
    student.pop("wid", None)
    student.update(geometry.student_overrides(), target=[t for t in cfg.target if t != "sp"] or ["mlm"])
    student.pop("attention_head_size", None)
    return PruneResult(out, student, kept, dropped)


def prune_checkpoint(model_path, config_path, output_model_path, hidden_size, feedforward_size=None,
                     strategy="dim", output_config_path=None):
    """Files in, files out: the pruned weights and their config json. Returns (PruneResult, config path)."""
    sd = load_state_dict_file(model_path)
    result = prune_state_dict(sd, config_for_checkpoint(config_path, sd), hidden_size, feedforward_size, strategy)
    save_state_dict(result.state_dict, output_model_path)
    output_config_path = output_config_path or config_path_beside(output_model_path)
    write_json(output_config_path, result.config)
    return result, output_config_path
