"""Fold the compactors into the weights and keep the kept coordinates: a smaller dense BERT (WID.md §6).

    linear       W_s = R[keep_out, :] W L[:, keep_in]      b_s = (R b)[keep_out]
    LayerNorm    gamma[keep], beta[keep]                    (S, or M for the MLM head)
    embeddings   E_s = E C_emb[S, :]^T                      for word, position and segment tables
    decoder      W_dec,s = W_dec L_dec[:, M]                bias unchanged (the vocabulary is kept)
    strategy dim W_q, b_q *= sqrt(d_student / d_teacher)    the student divides scores by sqrt(d_s)

Computed in float64, stored in float32. The student keeps BERT's key names, and its config is the
teacher's with the new widths, encoder "transformer", target ["mlm"], untied decoder (the merged
decoder W_dec L_dec[:, M] differs from the merged word table E C_emb[S, :]^T), and no wid block.
"""
import math

import torch

from tencentpretrain.errors import UserError
from tencentpretrain.wid.compactor import CompactedLinear
from tencentpretrain.wid.config import plan_geometry
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
        w = w @ linear.compactor_in.double()[:, k_in]
    if linear.compactor_out is not None:
        r = linear.compactor_out.double()[k_out]
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


@torch.no_grad()
def merge(model):
    """The dense student of a compacted WID model: (state_dict, student config dict)."""
    check_finished(model)
    cfg, geometry = model.cfg, plan_geometry(model.cfg)
    for g in groups_of(model):  # the student's heads must all have the same size
        if g.kind == "attention":
            per_head = g.keep.view(-1, g.unit).sum(1)
            want = {geometry.target_head_size} if cfg.wid.strategy == "dim" else {0, g.unit}
            if not set(per_head.tolist()) <= want:
                raise UserError(f"group {g.name}: kept dims per head {per_head.tolist()} do not form "
                                f"{geometry.target_heads} heads of {geometry.target_head_size}")
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
            c = module.compactor_out.double()[_kept(module.groups[0])]
            for emb_name in module.names:
                table = getattr(module, emb_name).embedding.weight.double()
                sd[f"{prefix}{emb_name}.embedding.weight"] = table @ c.t()
    if cfg.wid.strategy == "dim":  # scores were divided by sqrt(d_teacher) in training
        scale = math.sqrt(geometry.target_head_size / geometry.head_size)
        for i in range(cfg.layers_num):
            for key in ("weight", "bias"):
                sd[f"encoder.transformer.{i}.self_attn.linear_layers.0.{key}"] *= scale
    own = {k for k in model.state_dict() if "compactor" not in k and "wid_mask." not in k}
    if own - set(sd):
        raise RuntimeError(f"merge left out {sorted(own - set(sd))[:5]}")  # a component it does not know
    student = cfg.to_dict()
    student.pop("wid", None)
    student.update(geometry.student_overrides(), encoder="transformer", target=["mlm"], tie_weights=False)
    student = {k: v for k, v in student.items() if v is not None}
    return {k: v.float().contiguous() for k, v in sd.items()}, student


def student_config_path(output_model_path):
    root = output_model_path
    for ext in (".safetensors", ".bin", ".pt"):
        if root.endswith(ext):
            root = root[: -len(ext)]
    return root + "_config.json"


def merge_checkpoint(load_model_path, config_path, output_model_path, output_config_path=None, wid_args=None):
    """Read a compacted checkpoint, write the dense student and its config json. Returns the config path."""
    import json

    from tencentpretrain.config import load_model_config
    from tencentpretrain.model_builder import build_model
    from tencentpretrain.model_io import load_model_weights, load_state_dict_file, save_state_dict
    from tencentpretrain.utils.io import atomic_write
    from tencentpretrain.wid.cli import apply_wid_overrides

    sd = load_state_dict_file(load_model_path)
    # Table sizes come from the checkpoint (the run may have overridden them on the command line).
    shapes = {"vocab_size": "embedding.word.embedding.weight", "max_seq_length": "embedding.pos.embedding.weight"}
    cfg = load_model_config(config_path, {k: sd[key].shape[0] for k, key in shapes.items() if key in sd})
    if cfg.wid is None:
        raise UserError(f"{config_path}: not a WID config (no 'wid' block); pass the config the compacted "
                        f"model was trained with, e.g. models/wid/bert_base_to_384_dim.json")
    apply_wid_overrides(cfg, wid_args or {})
    model = build_model(cfg)
    load_model_weights(model, sd, where=load_model_path)  # strict: compactors and masks must be there
    student_sd, student_cfg = merge(model)
    save_state_dict(student_sd, output_model_path)
    output_config_path = output_config_path or student_config_path(output_model_path)
    with atomic_write(output_config_path, "w", encoding="utf-8") as f:
        json.dump(student_cfg, f, indent=2)
        f.write("\n")
    return output_config_path, student_cfg
