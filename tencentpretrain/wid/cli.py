"""The WID command-line flags (the reference code's names), and what they do to the model config.

Explicit flags override the config's wid block. A plain BERT config (no wid block) given any WID flag
is turned into a WID config, as the reference code's `pretrain.py --config_path bert/base_config.json
--target mlm --target_dim 192 ...` expects: encoder "transformer" -> "wid_transformer", target
"mlm" -> "wid_mlm" (a teacher's "sp" dropped: WID trains with the MLM loss only), the embedding
compactor (added by build_model for any wid block), and a wid block of the defaults plus the flags.
"""
import argparse
import dataclasses

from tencentpretrain.errors import UserError
from tencentpretrain.utils.log import info
from tencentpretrain.wid.config import WidConfig, plan_geometry
from tencentpretrain.wid.strategies import strategy_names

# flag -> WidConfig field
FLAGS = {"target_dim": "target_hidden_size", "target_feedforward_size": "target_feedforward_size",
         "compactor_mask_strategy": "strategy", "l2_lambda": "l2_lambda",
         "compactor_learning_rate": "compactor_learning_rate", "w_step": "w_step", "mask_path": "mask_path",
         "attention_stage_interval": "attention_stage_interval", "pre_mask_l2": "pre_mask_l2",
         "comp_only": "compactors_only", "print_ins_log": "print_updates"}
# Flags that only switch WID on (the reference's --weight_squeeze).
SWITCHES = ("weight_squeeze",)


def wid_opts(parser):
    g = parser.add_argument_group("WID (the reference code's flags; they override the config's wid block, "
                                  "and turn a plain BERT config into a WID one)")
    s = argparse.SUPPRESS
    g.add_argument("--target_dim", type=int, default=s, help="student hidden size (wid.target_hidden_size)")
    g.add_argument("--target_feedforward_size", type=int, default=s,
                   help="student FFN size (default: scaled with --target_dim)")
    g.add_argument("--compactor_mask_strategy", choices=strategy_names(), default=s,
                   help="dim: all heads kept, each narrower; head: whole heads dropped")
    g.add_argument("--l2_lambda", type=float, default=s, help="pull on masked entries (default 20)")
    g.add_argument("--compactor_learning_rate", type=float, default=s, help="compactors' lr (default 5e-5)")
    g.add_argument("--w_step", type=int, default=s, help="optimizer steps between mask updates (default 1000)")
    g.add_argument("--mask_path", default=s, help="JSON-lines mask log (default: <output_model_path>.masks.jsonl)")
    g.add_argument("--attention_stage_interval", type=int, default=s,
                   help="mask updates per stream/attention stage (default 2; the reference: 1 for dim, 2 for head)")
    g.add_argument("--pre_mask_l2", type=float, default=s,
                   help="L2 on every compactor until the first mask update (default 0; the reference: 1)")
    g.add_argument("--comp_only", action="store_true", default=s,
                   help="train the compactors only (the teacher's weights frozen)")
    g.add_argument("--print_ins_log", action="store_true", default=s,
                   help="print the kept widths at every mask update")
    g.add_argument("--weight_squeeze", action="store_true", default=s,
                   help="turn WID on (implied by any other WID flag or a wid block)")
    return g


def given_flags(args):
    """The WID flags present in `args` (argparse namespace or dict), as {flag: value}."""
    values = args if isinstance(args, dict) else vars(args)
    return {k: v for k, v in values.items() if k in FLAGS or (k in SWITCHES and v)}


def apply_wid_overrides(model_cfg, args, where="command line"):
    """Apply the WID flags given in `args` to `model_cfg`, in place (converting a plain config)."""
    given = given_flags(args)
    converted = model_cfg.wid is None and bool(given)
    if model_cfg.wid is None:
        if not given:
            return model_cfg
        convert_to_wid(model_cfg, given)
    normalise_target(model_cfg)
    overrides = {FLAGS[k]: v for k, v in given.items() if k in FLAGS}
    if overrides:
        values = dataclasses.asdict(model_cfg.wid)
        values.update(overrides)
        if "target_dim" in given and "target_feedforward_size" not in given:
            values["target_feedforward_size"] = None  # re-derived from the new width
        model_cfg.wid = WidConfig.from_dict({k: v for k, v in values.items() if v is not None}, where=where)
        plan_geometry(model_cfg, where=where)  # refuse unreachable widths before training starts
    if converted:
        _note(f"{' '.join('--' + k for k in given)} with a plain BERT config: compressing it with WID "
              f"(encoder -> wid_transformer, target -> wid_mlm, embedding compactor added; wid block "
              f"{model_cfg.wid.to_dict()}: the defaults plus these flags, see docs/wid.md, 'The "
              f"config surface')")
    return model_cfg


def normalise_target(model_cfg):
    """A WID run's target is ["wid_mlm"]; "mlm" (the reference's --target mlm) means it, and a
    teacher's next-sentence head "sp" is dropped (WID trains with the MLM loss only)."""
    target = list(model_cfg.target)
    if target == ["wid_mlm"]:
        return
    other = [t for t in target if t not in ("mlm", "wid_mlm", "sp")]
    if other or not {"mlm", "wid_mlm"} & set(target):
        raise UserError(f"WID trains with the MLM loss only: --target (or the config's \"target\") must be "
                        f"mlm, got {' '.join(target)}")
    if "sp" in target:
        _note(f"WID trains with the MLM loss only: target {' '.join(target)} -> wid_mlm "
              f"(a checkpoint's next-sentence head target.sp is ignored)")
    model_cfg.target = ["wid_mlm"]


def convert_to_wid(model_cfg, given):
    """A plain BERT config + WID flags -> the WID config (defaults of WidConfig + the flags)."""
    flags = " ".join(f"--{k}" for k in given)
    if model_cfg.encoder not in ("transformer", "wid_transformer"):
        raise UserError(f"{flags}: WID compresses a BERT-style \"transformer\" encoder; the config has "
                        f"encoder '{model_cfg.encoder}'")
    if model_cfg.decoder is not None:
        raise UserError(f"{flags}: WID compresses encoder-only models; the config has a decoder")
    if "target_dim" not in given:
        raise UserError(f"{flags} turn WID on, which needs --target_dim (the student's hidden size, e.g. "
                        f"--target_dim {model_cfg.hidden_size // 2}), or a WID config such as "
                        f"models/wid/bert_base_to_384_dim.json")
    # The defaults; apply_wid_overrides then applies the flags themselves.
    model_cfg.wid = WidConfig(target_hidden_size=given["target_dim"])
    model_cfg.encoder = "wid_transformer"


def _note(message):
    info(f"note: {message}", flush=True)
