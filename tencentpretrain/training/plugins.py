"""The seam through which features such as WID join a pretraining run without editing the loop.

pretrain.py calls, in this order:
    add_plugin_opts(parser)                          extra flags (WID: --target_dim, --w_step, ...)
    apply_plugin_overrides(model_cfg, args)          those flags into the model config
    build_plugins(model, model_cfg, train_cfg)       -> (callbacks, claims) handed to Trainer
    load_pretrained(model, model_cfg, path)          --pretrained_model_path; the model decides what may
                                                     be missing (a WID model: its compactors and masks)
Today one feature plugs in: a model config with a `wid` block makes these call
`tencentpretrain.wid.build_wid_plugin(model, model_cfg, train_cfg)` (returning `([callbacks], [claims])`)
and `tencentpretrain.wid.load_teacher`. A new feature adds its branch here and nothing in the loop.
"""
import argparse

from tencentpretrain.model_io import load_model_weights, load_state_dict_file


def add_plugin_opts(parser):
    from tencentpretrain.wid import wid_opts
    group = wid_opts(parser)
    if "--tensorboard_dir" in parser._option_string_actions:  # the reference's name for it
        group.add_argument("--tb_path", dest="tensorboard_dir", metavar="TB_PATH",
                           default=argparse.SUPPRESS,
                           help="the same as --tensorboard_dir (the WID reference code's name)")


def apply_plugin_overrides(model_cfg, args):
    from tencentpretrain.wid import apply_wid_overrides
    apply_wid_overrides(model_cfg, args)


def build_plugins(model, model_cfg, train_cfg):
    callbacks, claims = [], []
    if getattr(model_cfg, "wid", None) is not None:
        from tencentpretrain.wid import build_wid_plugin
        wid_callbacks, wid_claims = build_wid_plugin(model, model_cfg, train_cfg)
        callbacks += list(wid_callbacks)
        claims += list(wid_claims)
    return callbacks, claims


def load_pretrained(model, model_cfg, path):
    if getattr(model_cfg, "wid", None) is not None:
        from tencentpretrain.wid import load_teacher
        return load_teacher(model, path)
    # A plain model must find every key it has. Heads this model does not have (a BERT checkpoint's
    # `target.sp` under --target mlm) are dropped with a note; any other leftover is an error. A
    # checkpoint with no pre-training head at all (a bare encoder, e.g. a converted Hugging Face
    # BertModel) starts the heads from their initialisation, and says so.
    from tencentpretrain.model_io import drop_unused_heads
    from tencentpretrain.utils.log import info
    sd = load_state_dict_file(path)
    if not any(k.startswith("target.") for k in sd):
        report = load_model_weights(model, sd, allow_missing=("target.",), where=path)
        new = sorted({".".join(k.split(".")[:2]) for k in report.missing})
        info(f"note: {path} has no pre-training head; {', '.join(new)} start from random weights", flush=True)
        return report
    return load_model_weights(model, drop_unused_heads(model, sd, where=path), where=path)
