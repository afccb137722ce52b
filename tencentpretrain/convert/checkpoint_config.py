"""The model config that goes with a checkpoint, for the export command when --config_path is omitted.

Lookup order (the first file that exists wins):

  1. `<model path without .bin/.safetensors/.pt>_config.json`: what scripts/merge_compactors.py and the
     Hugging Face importer write beside their weights (models/student.bin -> models/student_config.json);
  2. for a step checkpoint `<output_model_path>-<step>` (what pretrain.py writes every
     --save_checkpoint_steps), the same name for `<output_model_path>`.

Without such a file the config is inferred from the weights, as TencentPretrain's converter needs no
config at all: sizes, layers, vocabulary and positions come from the tensors' shapes; heads_num is
hidden_size / 64 (true of every Google BERT size); LayerNorm, eps and activation are TencentPretrain's
defaults ('normal', 1e-6, gelu). Everything inferred is printed, so a wrong guess is visible.
"""
import os
import re

import torch

from tencentpretrain.config import TABLE_KEYS, ModelConfig, config_path_beside, table_sizes, validate
from tencentpretrain.errors import UserError

HEAD_SIZE = 64  # BERT's attention head size at every published size
WORD = TABLE_KEYS["vocab_size"]


def _stem(path):
    return config_path_beside(path)[: -len("_config.json")]


def config_candidates(model_path):
    """The config files looked for beside `model_path`, in order."""
    out = [_stem(model_path) + "_config.json"]
    step = re.match(r"(.+)-\d+$", model_path)
    if step:
        out.append(_stem(step.group(1)) + "_config.json")
    return out


def find_config(model_path):
    """(path of the first candidate that exists or None, every candidate tried)."""
    tried = config_candidates(model_path)
    return next((p for p in tried if os.path.isfile(p)), None), tried


def checkpoint_layers(sd):
    """Number of encoder layers in one of our state dicts (0 if none)."""
    found = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.transformer\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def check_layers_num(requested, found, where, config_layers=None, config_where=None):
    """UserError unless --layers_num (when given), the checkpoint and the config agree."""
    if requested is not None and requested != found:
        raise UserError(f"--layers_num {requested}, but {where} has {found} transformer layers; "
                        f"pass --layers_num {found} or leave it out (it is read from the checkpoint)")
    if config_layers is not None and config_layers != found:
        raise UserError(f"{config_where} says layers_num {config_layers}, but {where} has {found} "
                        f"transformer layers; pass the --config_path the model was trained with")


def infer_config(sd, where, tried):
    """A ModelConfig from the tensors' shapes (see the module docstring) and a one-line description."""
    layers = checkpoint_layers(sd)
    tried_text = ", ".join(tried)
    if WORD not in sd or not layers:
        raise UserError(f"no model config found for {where} (tried {tried_text}) and its keys are not a "
                        f"BERT's ({WORD}, encoder.transformer.N.*); pass --config_path")
    vocab, emb = sd[WORD].shape
    sizes = table_sizes(sd)
    hidden = sd["encoder.transformer.0.self_attn.linear_layers.0.weight"].shape[0]
    if hidden % HEAD_SIZE:
        raise UserError(f"no model config found for {where} (tried {tried_text}), and heads_num cannot be "
                        f"inferred from the weights (hidden_size {hidden} is not a multiple of {HEAD_SIZE}); "
                        f"pass --config_path")
    target = [t for t in ("mlm", "sp") if any(k.startswith(f"target.{t}.") for k in sd)] or ["mlm"]
    decoder = sd.get("target.mlm.linear_2.weight")
    cfg = ModelConfig(
        emb_size=emb, hidden_size=hidden, heads_num=hidden // HEAD_SIZE, layers_num=layers,
        feedforward_size=sd["encoder.transformer.0.feed_forward.linear_1.weight"].shape[0],
        max_seq_length=sizes.get("max_seq_length", 512), vocab_size=sizes["vocab_size"], target=target,
        layernorm_positioning="pre" if "encoder.layer_norm.gamma" in sd else "post",
        tie_weights=decoder is None or (decoder.shape == sd[WORD].shape and torch.equal(decoder, sd[WORD])))
    validate(cfg, where=f"config inferred from {where}")
    text = (f"no model config found (tried {tried_text}); inferred from the weights: hidden_size {hidden}, "
            f"feedforward_size {cfg.feedforward_size}, {layers} layers, vocab_size {vocab}, max_seq_length "
            f"{cfg.max_seq_length}; assumed heads_num {cfg.heads_num} (hidden_size / {HEAD_SIZE}), layernorm "
            f"'normal' eps 1e-6 and gelu (TencentPretrain's defaults). Pass --config_path if any differs")
    return cfg, text
