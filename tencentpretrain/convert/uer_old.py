"""Old UER-py key names -> TencentPretrain's, including the WID authors' compactor names.

Old UER names differ only outside the encoder (docs/converting.md). The WID reference code (a trimmed
UER-py fork, github.com/wutaiqiang/WID-NAACL2024) adds bias-free `nn.Linear` compactors whose
`.weight` is the matrix applied to the activations (y = C x), input side "left", output side
"right"; checkpoints saved under DDP also carry a `module.` prefix.
"""
import re

import torch

from tencentpretrain.errors import UserError
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.checkpoint_config import WORD, check_layers_num, checkpoint_layers
from tencentpretrain.resources import resolve
from tencentpretrain.model_io import load_state_dict_file, save_state_dict

MODULE_PREFIX = "module."  # torch DistributedDataParallel's wrapper

RENAMES = [  # (old key prefix, new key prefix)
    ("embedding.word_embedding.", "embedding.word.embedding."),
    ("embedding.position_embedding.", "embedding.pos.embedding."),
    ("embedding.segment_embedding.", "embedding.seg.embedding."),
    ("target.mlm_linear_1.", "target.mlm.linear_1."),
    ("target.layer_norm.", "target.mlm.layer_norm."),
    ("target.mlm_linear_2.", "target.mlm.linear_2."),
    ("target.sp_linear_1.", "target.sp.linear_1."),
    ("target.sp_linear_2.", "target.sp.linear_2."),
    ("target.nsp_linear_1.", "target.sp.linear_1."),
    ("target.nsp_linear_2.", "target.sp.linear_2."),
    ("target.sop_linear_1.", "target.sp.linear_1."),
    ("target.sop_linear_2.", "target.sp.linear_2."),
    ("target.output_layer.", "target.lm.output_layer."),
]

# The WID reference's compactors: (old key pattern, our linear/site, side). The site is written
# in our key names; {0}, {1} are the pattern's groups (layer, Q/K/V index). Side "in" is the
# reference's "left" compactor (acts on the input of the linear), "out" its "right" one.
WID_REFERENCE_COMPACTORS = [
    (r"embedding\.emb_compactor\.weight", "embedding", "out"),
    (r"encoder\.transformer\.(\d+)\.self_attn\.left_compactor\.([012])\.weight",
     "encoder.transformer.{0}.self_attn.linear_layers.{1}", "in"),
    (r"encoder\.transformer\.(\d+)\.self_attn\.right_compactor\.([012])\.weight",
     "encoder.transformer.{0}.self_attn.linear_layers.{1}", "out"),
    (r"encoder\.transformer\.(\d+)\.self_attn\.final_linear_left_compactor\.weight",
     "encoder.transformer.{0}.self_attn.final_linear", "in"),
    (r"encoder\.transformer\.(\d+)\.self_attn\.final_linear_right_compactor\.weight",
     "encoder.transformer.{0}.self_attn.final_linear", "out"),
    (r"encoder\.transformer\.(\d+)\.feed_forward\.linear_([12])_left_compactor\.weight",
     "encoder.transformer.{0}.feed_forward.linear_{1}", "in"),
    (r"encoder\.transformer\.(\d+)\.feed_forward\.linear_([12])_right_compactor\.weight",
     "encoder.transformer.{0}.feed_forward.linear_{1}", "out"),
    (r"target\.mlm_linear_1_left_compactor\.weight", "target.mlm.linear_1", "in"),
    (r"target\.mlm_linear_1_right_compactor\.weight", "target.mlm.linear_1", "out"),
    (r"target\.mlm_linear_2_left_compactor\.weight", "target.mlm.linear_2", "in"),
]

# Our compactor keys below the site (tencentpretrain/wid/compactor.py, modules.py): plain
# parameters in the same orientation as the reference's nn.Linear weights, so values copy as is.
OUR_COMPACTOR_KEYS = {"in": "{site}.compactor_in", "out": "{site}.compactor_out"}

# The reference writes its masks to a separate text file, one line per group and update:
# "step<TAB>parameter name<TAB>[pruned indices]", naming the compactor each group is ranked by.
# Ours live in the checkpoint as the buffers `<owner>.wid_mask.keep` / `.decay` (wid/groups.py).
REFERENCE_MASK_GROUPS = [  # (reference parameter, our group owner, indices are heads under "head")
    (r"encoder\.transformer\.0\.self_attn\.left_compactor\.2\.weight", "embedding", True),  # S
    (r"encoder\.transformer\.(\d+)\.self_attn\.final_linear_left_compactor\.weight",
     "encoder.transformer.{0}.self_attn", True),  # A.l
    (r"encoder\.transformer\.(\d+)\.feed_forward\.linear_2_left_compactor\.weight",
     "encoder.transformer.{0}.feed_forward", False),  # F.l
    (r"target\.mlm_linear_2_left_compactor\.weight", "target.mlm", False),  # M
]

# What a converted key may start with (anything else is reported, never dropped).
KNOWN_NEW = re.compile(r"^(embedding|encoder|tgt_embedding|decoder)\.|^target\.(mlm|sp|lm|cls)\.|"
                       r"^output_layer(_1|_2)?\.")


def wid_key(old_key):
    """Our key for one of the WID reference's compactor keys, or None if it is not one."""
    for pattern, site, side in WID_REFERENCE_COMPACTORS:
        m = re.fullmatch(pattern, old_key)
        if m:
            return OUR_COMPACTOR_KEYS[side].format(site=site.format(*m.groups()))
    return None


def convert_old_to_new(sd, where="checkpoint"):
    """An old UER (or WID reference) state dict -> (new state dict, list of (old, new) renames)."""
    out, renamed, unknown = {}, [], []
    for key, value in sd.items():
        name = key[len(MODULE_PREFIX):] if key.startswith(MODULE_PREFIX) else key
        new = wid_key(name)
        if new is None:
            new = name
            for old_prefix, new_prefix in RENAMES:
                if name.startswith(old_prefix):
                    new = new_prefix + name[len(old_prefix):]
                    break
        ours = name.endswith((".compactor_in", ".compactor_out"))  # already in our naming
        if ("compactor" in name and new == name and not ours) or not KNOWN_NEW.match(new):
            unknown.append(key)
            continue
        if new in out:
            raise UserError(f"{where}: both '{key}' and another key become '{new}'")
        if new != key:
            renamed.append((key, new))
        out[new] = value
    if unknown:
        shown = ", ".join(sorted(unknown)[:10]) + (f", ... ({len(unknown) - 10} more)" if len(unknown) > 10 else "")
        raise UserError(f"{where}: {len(unknown)} keys have no known new name: {shown}")
    return out, renamed


def read_reference_masks(path, step=None, where=None):
    """{reference parameter name: pruned indices} at `step` (default: the last step in the file)."""
    where = where or path
    rows = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            try:
                rows.setdefault(int(parts[0]), {})[parts[1].removeprefix(MODULE_PREFIX)] = \
                    [int(i) for i in parts[2].strip().strip("[]").split(",") if i.strip()]
            except (IndexError, ValueError):
                raise UserError(f"{where}, line {number}: expected 'step<TAB>name<TAB>[indices]', "
                                f"got {line.strip()[:80]!r}") from None
    if not rows:
        raise UserError(f"{where}: no mask lines")
    step = max(rows) if step is None else step
    if step not in rows:
        raise UserError(f"{where}: no masks for step {step}; steps in the file: "
                        f"{', '.join(map(str, sorted(rows)))}")
    return rows[step]


def masks_to_buffers(masks, sd, strategy="dim", head_size=64, where="mask file"):
    """The reference's pruned indices -> our `<owner>.wid_mask.keep/decay` buffers.

    Group sizes come from the converted checkpoint's compactors. Masked dims are written as dead
    (decay 0): the reference pulled them towards zero for the rest of its run, and our merge and
    forward then drop them exactly as the merged student will.
    """
    out = {}
    for name, pruned in masks.items():
        for pattern, owner, heads in REFERENCE_MASK_GROUPS:
            m = re.fullmatch(pattern, name)
            if m:
                break
        else:
            raise UserError(f"{where}: masks for '{name}', which is not one of the compactors the "
                            f"reference ranks groups by")
        owner = owner.format(*m.groups())
        if wid_key(name) not in sd:
            raise UserError(f"{where}: masks for '{name}' but the checkpoint has no such compactor")
        size = sd[wid_key(name)].shape[1]
        if strategy == "head" and heads:  # the reference logs whole heads for S and A.l
            pruned = [h * head_size + i for h in pruned for i in range(head_size)]
        if any(not 0 <= i < size for i in pruned):
            raise UserError(f"{where}: '{name}' prunes indices outside 0..{size - 1}; check "
                            f"--compactor_mask_strategy and --head_size")
        keep = torch.ones(size, dtype=torch.bool)
        keep[pruned] = False
        out[f"{owner}.wid_mask.keep"] = keep
        out[f"{owner}.wid_mask.decay"] = keep.float()
    return out


def check_against_config(sd, config_path, where):
    """UserError unless the converted checkpoint has the config's layer count and embedding size."""
    cfg = load_model_config(resolve(config_path))
    check_layers_num(None, checkpoint_layers(sd), where, cfg.layers_num, config_path)
    if WORD in sd and sd[WORD].shape[1] != cfg.emb_size:
        raise UserError(f"{config_path} says emb_size {cfg.emb_size}, but {where}'s word table has width "
                        f"{sd[WORD].shape[1]}; pass the --config_path the model was trained with")


def old_to_new_main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description="Rename old UER-py keys (and the WID reference code's "
                                            "compactor keys) to this toolkit's names.",
                                epilog="Guide: docs/converting.md")
    p.add_argument("--input_model_path", required=True, help="the old checkpoint")
    p.add_argument("--output_model_path", required=True, help="the checkpoint with new key names")
    p.add_argument("--mask_path", help="the WID reference's mask file: adds our wid_mask buffers so "
                                       "scripts/merge_compactors.py can merge the checkpoint")
    p.add_argument("--mask_step", type=int, help="which step's masks (default: the last in the file)")
    p.add_argument("--compactor_mask_strategy", choices=("dim", "head"), default="dim",
                   help="the reference run's strategy ('head' logs head indices for S and A)")
    p.add_argument("--head_size", type=int, default=64, help="the reference hard-codes 64")
    p.add_argument("--config_path", help="TencentPretrain's flag (the model's config). Keys are recognised "
                                         "by name here, so it is only checked against the result: layers_num "
                                         "and emb_size must match")
    a = p.parse_args(argv)
    sd, renamed = convert_old_to_new(load_state_dict_file(a.input_model_path), where=a.input_model_path)
    if a.config_path:
        check_against_config(sd, a.config_path, a.input_model_path)
    masks = {}
    if a.mask_path:
        masks = masks_to_buffers(read_reference_masks(a.mask_path, a.mask_step), sd,
                                 a.compactor_mask_strategy, a.head_size, where=a.mask_path)
        sd.update(masks)
    save_state_dict(sd, a.output_model_path)
    compactors = sum("compactor" in old for old, _ in renamed)
    print(f"{a.output_model_path}: {len(sd)} tensors, {len(renamed)} renamed "
          f"({compactors} WID compactors), {len(masks) // 2} mask groups added")
