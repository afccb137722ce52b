"""The training side of features (tencentpretrain/features.py): what pretrain.py asks of the active ones.

    build_plugins(model, model_cfg, train_cfg)   -> (callbacks, claims) handed to the Trainer
    load_pretrained(model, model_cfg, path)      --pretrained_model_path; a feature may load it its own way
                                                 (WID: a plain teacher into a model with compactors)

A feature is active when the model config has its block; a plain run has none and loads no feature.
"""
from tencentpretrain import features
from tencentpretrain.model_io import drop_unused_heads, load_model_weights, load_state_dict_file
from tencentpretrain.utils.log import info


def build_plugins(model, model_cfg, train_cfg):
    callbacks, claims = [], []
    for feature in features.active(model_cfg):
        more_callbacks, more_claims = feature.training_plugins(model, model_cfg, train_cfg)
        callbacks += list(more_callbacks)
        claims += list(more_claims)
    return callbacks, claims


def load_pretrained(model, model_cfg, path):
    for feature in features.active(model_cfg):
        report = feature.load_pretrained(model, path)
        if report is not None:
            return report
    # A plain model must find every key it has. Heads this model does not have (a BERT checkpoint's
    # `target.sp` under --target mlm) are dropped with a note; any other leftover is an error. A
    # checkpoint with no pre-training head at all (a bare encoder, e.g. a converted Hugging Face
    # BertModel) starts the heads from their initialisation, and says so.
    sd = load_state_dict_file(path)
    if not any(k.startswith("target.") for k in sd):
        report = load_model_weights(model, sd, allow_missing=("target.",), where=path)
        new = sorted({".".join(k.split(".")[:2]) for k in report.missing})
        info(f"note: {path} has no pre-training head; {', '.join(new)} start from random weights", flush=True)
        return report
    return load_model_weights(model, drop_unused_heads(model, sd, where=path), where=path)
