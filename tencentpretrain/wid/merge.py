"""Fold the compactors into the weights and keep the kept coordinates: a smaller dense BERT (docs/wid.md, "Merge").

    linear       W_s = R[keep_out, :] W L[:, keep_in]      b_s = (R b)[keep_out]
    LayerNorm    gamma[keep], beta[keep]                    (S, or M for the MLM head)
    embeddings   E_s = E C_emb[S, :]^T                      for word, position and segment tables
    decoder      W_dec,s = W_dec L_dec[:, M]                bias unchanged (the vocabulary is kept)
    head size    W_q, b_q *= sqrt(d_student / d_teacher)    when the strategy narrows the heads (`dim`):
                                                            the student divides scores by sqrt(d_s)

Computed in float64, stored in float32. The student keeps BERT's key names, and its config is the
teacher's with the new widths, encoder "transformer", target ["mlm"], untied decoder (the merged
decoder W_dec L_dec[:, M] differs from the merged word table E C_emb[S, :]^T), and no wid block.
Magnitude pruning (pruning.py) folds the same way, with identity compactors and masks set once.
"""
import math
import os
import warnings

import torch

from tencentpretrain.config import config_for_checkpoint, config_path_beside
from tencentpretrain.errors import UserError
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_model_weights, load_state_dict_file, save_state_dict
from tencentpretrain.training.checkpoint import state_path
from tencentpretrain.utils.io import write_json
from tencentpretrain.wid.cli import apply_wid_overrides
from tencentpretrain.wid.compactor import CompactedLinear
from tencentpretrain.wid.config import plan_geometry
from tencentpretrain.wid.decay import live_masked, steps_to_die
from tencentpretrain.wid.groups import groups_of
from tencentpretrain.wid.layer_norm import MaskedLayerNorm
from tencentpretrain.wid.modules import CompactedEmbedding


def _kept(group):
    return None if group is None else group.kept_index()


@torch.no_grad()
def fold_linear(linear):
    g_in, g_out = linear.groups
    k_in = _kept(g_in) if linear.compactor_in is not None else None
    k_out = _kept(g_out) if linear.compactor_out is not None else None
    w = linear.weight.double()
    b = linear.bias.double() if linear.bias is not None else None
    if linear.compactor_in is not None:
        w = w @ linear.compactor_in[:, k_in].double()
    if linear.compactor_out is not None:
        r = linear.compactor_out[k_out].double()
        w = r @ w
        b = r @ b if b is not None else None
    return w, b


def check_finished(model):
    groups = groups_of(model)
    for g in groups:
        g.refresh()
    short = [f"{g.name} keeps {g.n_kept} of {g.size} (target {g.target})" for g in groups if g.n_kept != g.target]
    if short:
        geometry = plan_geometry(model.cfg)
        raise UserError("the masks have not reached the target widths: " + "; ".join(short[:4]) +
                        (f" (+{len(short) - 4} more)" if len(short) > 4 else "") +
                        f". The schedule needs {geometry.schedule_steps} optimizer steps (w_step "
                        f"{model.cfg.wid.w_step}); train longer or merge a later checkpoint.")


def check_heads(model, geometry):
    """Every layer's kept attention dims must form the student's heads: target_heads heads of
    target_head_size, the other heads empty (the student's config has one head count and size)."""
    for g in groups_of(model):
        if g.kind != "attention":
            continue
        per_head = g.keep.view(-1, g.unit).sum(1).tolist()
        used = [n for n in per_head if n]
        if len(used) != geometry.target_heads or set(used) != {geometry.target_head_size}:
            raise UserError(f"group {g.name}: kept dims per head {per_head} do not form "
                            f"{geometry.target_heads} heads of {geometry.target_head_size}")


@torch.no_grad()
def fold_model(model):
    """{key: float64 tensor} of every folded parameter: compactors and masks applied, kept coordinates
    only, under the teacher's key names (the attention-scale fix is separate: fold_score_scale)."""
    sd = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, CompactedLinear):
            w, b = fold_linear(module)
            sd[prefix + "weight"] = w
            if b is not None:
                sd[prefix + "bias"] = b
        elif isinstance(module, MaskedLayerNorm):
            keep = _kept(module.group[0])
            sd[prefix + "gamma"], sd[prefix + "beta"] = module.gamma.double()[keep], module.beta.double()[keep]
        elif isinstance(module, CompactedEmbedding):
            c = module.compactor_out[_kept(module.groups[0])].double()
            for emb_name in module.names:
                table = getattr(module, emb_name).embedding.weight.double()
                sd[f"{prefix}{emb_name}.embedding.weight"] = table @ c.t()
    return sd


def unfolded_keys(model, sd):
    """The model's own keys (not compactors or masks) that fold_model did not produce."""
    return sorted(k for k in model.state_dict() if "compactor" not in k and "wid_mask." not in k and k not in sd)


def fold_score_scale(sd, layers, geometry):
    """Training divides attention scores by sqrt(teacher head size), the student by sqrt(its own): when
    the head size changes, fold sqrt(d_student / d_teacher) into W_q and b_q of every layer, in place."""
    if geometry.target_head_size == geometry.head_size:
        return sd
    scale = math.sqrt(geometry.target_head_size / geometry.head_size)
    for i in range(layers):
        for key in ("weight", "bias"):
            key = f"encoder.transformer.{i}.self_attn.linear_layers.0.{key}"
            if key in sd:
                sd[key] = sd[key] * scale
    return sd


@torch.no_grad()
def merge(model):
    """The dense student of a compacted WID model: (state_dict, student config dict)."""
    check_finished(model)
    cfg, geometry = model.cfg, plan_geometry(model.cfg)
    check_heads(model, geometry)
    sd = fold_score_scale(fold_model(model), cfg.layers_num, geometry)
    left_out = unfolded_keys(model, sd)
    if left_out:
        raise RuntimeError(f"merge left out {left_out[:5]}")  # a component it does not know
    student = cfg.to_dict()
    student.pop("wid", None)
    student.update(geometry.student_overrides(), encoder="transformer", target=["mlm"], tie_weights=False)
    student = {k: v for k, v in student.items() if v is not None}
    return {k: v.float().contiguous() for k, v in sd.items()}, student


def _decay_context(load_model_path, wid):
    """(compactor lr, l2_lambda, step, last mask update, source) for the "steps still needed" estimate:
    from the training-state file beside the checkpoint when there is one, else the config."""
    lr, lam, step, last, source = wid.compactor_learning_rate, wid.l2_lambda, None, None, "the config"
    if os.path.isfile(state_path(load_model_path)):
        try:
            state = torch.load(state_path(load_model_path), map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # unreadable: the estimate falls back to the config
            return lr, lam, step, last, source
        cb = state.get("callbacks", {}).get("wid", {})
        groups = state.get("optimizer", {}).get("param_groups", [])
        # The lr the next step would use: the compactors' group in the optimizer, else the last one used.
        lr = next((g["lr"] for g in groups if g.get("name") == "wid_compactor"), cb.get("compactor_lr", lr))
        lam, step, last = cb.get("l2_lambda", lam), state.get("step"), cb.get("last_update")
        source = os.path.basename(state_path(load_model_path))
    return float(lr), float(lam), step, last, source


def check_dead(model, load_model_path, allow_live_masked=False):
    """Refuse (or, allowed, warn about) masked coordinates that have not decayed below wid.zero_below:
    the merge drops them, so the student would differ from the trained model."""
    wid = model.cfg.wid
    live = live_masked(model, wid.zero_below)
    if not live:
        return []
    lr, lam, step, last, source = _decay_context(load_model_path, wid)
    count = sum(n for _, n, _, _ in live)
    factor = max(f for _, _, f, _ in live)
    magnitude = max(m for _, _, _, m in live)
    need = steps_to_die(factor, lr * lam, wid.zero_below)
    at = f" at step {step}" if step is not None else ""
    since = f", {step - last} steps after the last mask update (step {last})" if step is not None and last else ""
    need_text = (f"about {need} more steps" if need != float("inf") else
                 "more steps than any run has: the compactor lr is 0 there (the end of the lr schedule)")
    groups = ", ".join(f"{name} {n}" for name, n, _, _ in live[:8]) + (" ..." if len(live) > 8 else "")
    message = (f"{load_model_path}{at}{since}: {count} masked coordinates are not dead yet ({groups}); the "
               f"largest remaining decay factor is {factor:.3g} (dead below wid.zero_below = {wid.zero_below:g}), "
               f"the largest remaining masked entry {magnitude:.3g}. Merging drops them, so the student would "
               f"differ from the trained model. At the current decay (1 - lr_c x l2_lambda = 1 - {lr:.3g} x "
               f"{lam:g} per step, from {source}) they need {need_text}: train longer (resume with a larger "
               f"--total_steps) or merge a later checkpoint")
    if not allow_live_masked:
        raise UserError(message + "; nothing was written. --allow_live_masked merges anyway.")
    warnings.warn(message + "; merging anyway (--allow_live_masked).")
    return live


def merge_checkpoint(load_model_path, config_path, output_model_path, output_config_path=None, wid_args=None,
                     allow_live_masked=False):
    """Read a compacted checkpoint, write the dense student and its config json. Returns the config path.
    `config_path` is the WID config the run used, or the plain teacher config plus the same WID flags
    in `wid_args` (the reference code's way)."""
    sd = load_state_dict_file(load_model_path)
    cfg = config_for_checkpoint(config_path, sd)  # table sizes from the checkpoint
    apply_wid_overrides(cfg, wid_args or {})
    if cfg.wid is None:
        raise UserError(f"{config_path}: not a WID config (no 'wid' block); pass the config the compacted "
                        f"model was trained with, e.g. models/wid/bert_base_to_384_dim.json, or the teacher's "
                        f"config with the run's WID flags (--target_dim ...)")
    model = build_model(cfg)
    load_model_weights(model, sd, where=load_model_path)  # strict: compactors and masks must be there
    check_finished(model)
    check_dead(model, load_model_path, allow_live_masked)
    student_sd, student_cfg = merge(model)
    save_state_dict(student_sd, output_model_path)
    output_config_path = output_config_path or config_path_beside(output_model_path)
    write_json(output_config_path, student_cfg)
    return output_config_path, student_cfg
