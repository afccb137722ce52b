"""The reference code's WID flags, as overrides of the config's wid block (explicit flags win)."""
import argparse
import dataclasses

from tencentpretrain.errors import UserError

# flag -> WidConfig field
FLAGS = {"target_dim": "target_hidden_size", "target_feedforward_size": "target_feedforward_size",
         "compactor_mask_strategy": "strategy", "l2_lambda": "l2_lambda",
         "compactor_learning_rate": "compactor_learning_rate", "w_step": "w_step", "mask_path": "mask_path"}


def wid_opts(parser):
    g = parser.add_argument_group("WID (override the config's wid block)")
    s = argparse.SUPPRESS
    g.add_argument("--target_dim", type=int, default=s, help="student hidden size (wid.target_hidden_size)")
    g.add_argument("--target_feedforward_size", type=int, default=s,
                   help="student FFN size (default: scaled with --target_dim)")
    g.add_argument("--compactor_mask_strategy", choices=("dim", "head"), default=s,
                   help="dim: all heads kept, each narrower; head: whole heads dropped")
    g.add_argument("--l2_lambda", type=float, default=s, help="pull on masked entries (default 20)")
    g.add_argument("--compactor_learning_rate", type=float, default=s, help="compactors' lr (default 5e-5)")
    g.add_argument("--w_step", type=int, default=s, help="optimizer steps between mask updates")
    g.add_argument("--mask_path", default=s, help="JSON-lines mask log (default: <output_model_path>.masks.jsonl)")
    return g


def apply_wid_overrides(model_cfg, args):
    """Apply the WID flags given in `args` (argparse namespace or dict) to `model_cfg.wid`, in place."""
    given = {k: v for k, v in (args if isinstance(args, dict) else vars(args)).items() if k in FLAGS}
    if not given:
        return model_cfg
    if model_cfg.wid is None:
        raise UserError(f"--{' --'.join(given)} need a WID model config (a 'wid' block, e.g. "
                        f"models/wid/bert_base_to_384_dim.json)")
    from tencentpretrain.wid.config import WidConfig, plan_geometry
    values = dataclasses.asdict(model_cfg.wid)
    values.update({FLAGS[k]: v for k, v in given.items()})
    if "target_dim" in given and "target_feedforward_size" not in given:
        values["target_feedforward_size"] = None  # re-derived from the new width
    model_cfg.wid = WidConfig.from_dict({k: v for k, v in values.items() if v is not None},
                                        where="command line")
    plan_geometry(model_cfg, where="command line")  # refuse unreachable widths before training starts
    return model_cfg
