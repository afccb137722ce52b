"""Reading and writing Hugging Face BERT files and folders, and the two conversion commands.

A HF model is a folder (config.json + model.safetensors or pytorch_model.bin, maybe sharded) or
a single weights file. Ours is a weights file plus a model config json.
"""
import argparse
import json
import os
import shutil

from tencentpretrain.config import ModelConfig, load_model_config
from tencentpretrain.convert.hf_bert import (ARCHITECTURES, config_from_hf, hf_to_tencentpretrain,
                                             tencentpretrain_to_hf)
from tencentpretrain.errors import UserError
from tencentpretrain.model_io import load_state_dict_file, save_state_dict
from tencentpretrain.utils.io import atomic_write

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: malformed JSON at line {err.lineno}: {err.msg}") from None


def read_hf_weights(path):
    """A HF state dict from a weights file or a model folder (single or sharded); plus the folder."""
    if os.path.isfile(path):
        return load_state_dict_file(path), os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(path):
        raise UserError(f"not found: {path} (give a HF model folder or a .bin/.safetensors file)")
    for name in WEIGHT_FILES:
        if os.path.isfile(os.path.join(path, name)):
            return load_state_dict_file(os.path.join(path, name)), path
    for name in INDEX_FILES:
        index = os.path.join(path, name)
        if os.path.isfile(index):
            sd = {}
            for shard in sorted(set(_read_json(index)["weight_map"].values())):
                sd.update(load_state_dict_file(os.path.join(path, shard)))
            return sd, path
    raise UserError(f"{path}: no {' or '.join(WEIGHT_FILES)} (or a sharded index) in this folder")


def convert_hf_to_tencentpretrain(input_path, output_model_path, output_config_path=None,
                                  hf_config_path=None, target=None, layernorm="normal_torch", log=print):
    """Convert a HF BERT; writes our weights and (when a HF config.json is known) our config json."""
    sd, folder = read_hf_weights(input_path)
    ours, report = hf_to_tencentpretrain(sd, where=input_path, target=target, layernorm=layernorm)
    hf_config_path = hf_config_path or os.path.join(folder, "config.json")
    config = None
    if os.path.isfile(hf_config_path):
        config = config_from_hf(_read_json(hf_config_path), report, layernorm, where=hf_config_path)
        output_config_path = output_config_path or os.path.splitext(output_model_path)[0] + "_config.json"
        load_model_config(None, config)  # validate before writing anything
    elif output_config_path:
        raise UserError(f"no HF config.json at {hf_config_path}; pass --hf_config_path to write "
                        f"{output_config_path}")
    save_state_dict(ours, output_model_path)
    log(f"{report.architecture or 'BertModel'}: {report.layers_num} layers, heads "
        f"{', '.join(report.heads) or 'none'} -> {output_model_path} ({len(ours)} tensors)")
    if config is not None:
        with atomic_write(output_config_path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        log(f"config -> {output_config_path} (layernorm {layernorm}, eps {config['layernorm_eps']:g}, "
            f"target {config['target']})")
    else:
        log("no HF config.json beside the weights: no model config written (pass --hf_config_path)")
    for key in report.ignored:
        log(f"ignored {key} (a buffer or tied duplicate, not a weight)")
    for note in report.notes:
        log(note if note.startswith("warning:") else f"note: {note}")
    return ours, config, report


def _save_safetensors(sd, path):
    from safetensors.torch import save
    sd = {k: v.detach().cpu().clone().contiguous() for k, v in sd.items()}
    with atomic_write(path, "wb") as f:
        f.write(save(sd, metadata={"format": "pt"}))  # transformers checks this tag


def convert_tencentpretrain_to_hf(input_model_path, config_path, output_path, architecture=None,
                                  fmt=None, force=False, vocab_path=None, log=print):
    """Export ours to a HF folder (config.json + weights [+ vocab.txt]) or a single weights file."""
    cfg = config_path if isinstance(config_path, ModelConfig) else load_model_config(config_path)
    sd = load_state_dict_file(input_model_path)
    if cfg.vocab_size is None:
        cfg.vocab_size = sd["embedding.word.embedding.weight"].shape[0]
    hf_sd, hf_cfg, notes = tencentpretrain_to_hf(sd, cfg, architecture, force, where=input_model_path)
    for note in notes:
        log(note if note.startswith("warning:") else f"note: {note}")
    single = output_path.endswith((".bin", ".safetensors"))
    if single:
        weights = output_path
    else:
        if fmt is None:
            try:
                import safetensors  # noqa: F401
                fmt = "safetensors"
            except ImportError:
                fmt = "bin"
        weights = os.path.join(output_path, WEIGHT_FILES[0] if fmt == "safetensors" else WEIGHT_FILES[1])
    if weights.endswith(".safetensors"):
        try:
            _save_safetensors(hf_sd, weights)
        except ImportError:
            raise UserError("writing .safetensors needs the optional package 'safetensors' "
                            "(pip install safetensors), or use --format bin") from None
    else:
        save_state_dict(hf_sd, weights)
    if not single:
        with atomic_write(os.path.join(output_path, "config.json"), "w", encoding="utf-8") as f:
            json.dump(hf_cfg, f, indent=2)
            f.write("\n")
        if vocab_path:
            shutil.copyfile(vocab_path, os.path.join(output_path, "vocab.txt"))
    log(f"{hf_cfg['architectures'][0]} -> {output_path} ({len(hf_sd)} tensors"
        f"{', config.json' if not single else ''}{', vocab.txt' if vocab_path and not single else ''})")
    return hf_sd, hf_cfg


def _targets(text):
    names = [t for t in text.split(",") if t]
    bad = [t for t in names if t not in ("mlm", "sp")]
    if bad or not names:
        raise UserError(f"--target takes a comma-separated list of mlm and sp, got '{text}'")
    return names


def import_main(argv=None):
    p = argparse.ArgumentParser(description="Convert a Hugging Face BERT (folder or .bin/.safetensors "
                                            "file) to this toolkit's keys and config.")
    p.add_argument("--input_model_path", required=True, help="HF model folder or weights file")
    p.add_argument("--output_model_path", required=True, help="our weights (.bin or .safetensors)")
    p.add_argument("--output_config_path", help="our model config json "
                                                "(default: <output_model_path stem>_config.json)")
    p.add_argument("--hf_config_path", help="HF config.json (default: the one beside the weights)")
    p.add_argument("--target", help="pre-training heads to keep, e.g. mlm or mlm,sp "
                                    "(default: those present; mlm for a bare encoder)")
    p.add_argument("--layernorm", choices=("normal_torch", "normal"), default="normal_torch",
                   help="normal_torch reproduces HF exactly; normal (TencentPretrain's) rescales the "
                        "gains and matches to ~1e-6")
    a = p.parse_args(argv)
    convert_hf_to_tencentpretrain(a.input_model_path, a.output_model_path, a.output_config_path,
                                  a.hf_config_path, _targets(a.target) if a.target else None, a.layernorm)


def export_main(argv=None):
    p = argparse.ArgumentParser(description="Convert this toolkit's BERT to a Hugging Face folder "
                                            "(config.json + weights) or a single weights file.")
    p.add_argument("--input_model_path", required=True)
    p.add_argument("--config_path", required=True, help="our model config json")
    p.add_argument("--output_model_path", required=True,
                   help="a folder, or a file ending in .bin/.safetensors (weights only)")
    p.add_argument("--architecture", choices=list(ARCHITECTURES),
                   help="default: from the heads present (e.g. mlm+sp -> BertForPreTraining)")
    p.add_argument("--format", choices=("safetensors", "bin"), help="weights format in a folder "
                                                                  "(default: safetensors when installed)")
    p.add_argument("--vocab_path", help="copy this vocabulary into the folder as vocab.txt")
    p.add_argument("--force", action="store_true",
                   help="export a model with TencentPretrain's LayerNorm ('normal'); outputs then "
                        "differ from ours by ~1e-6 relative")
    a = p.parse_args(argv)
    from tencentpretrain.resources import resolve
    convert_tencentpretrain_to_hf(a.input_model_path, resolve(a.config_path), a.output_model_path,
                                  a.architecture, a.format, a.force, resolve(a.vocab_path))
