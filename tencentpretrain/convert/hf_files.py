"""Reading and writing Hugging Face BERT files and folders, and the two conversion commands.

A HF model is a folder (config.json + model.safetensors or pytorch_model.bin, maybe sharded) or
a single weights file. Ours is a weights file plus a model config json.
"""
import argparse
import json
import os
import shutil

from tencentpretrain.config import ModelConfig, load_model_config, table_sizes
from tencentpretrain.convert import layernorm_deviation
from tencentpretrain.convert.checkpoint_config import (check_layers_num, checkpoint_layers, find_config,
                                                       infer_config)
from tencentpretrain.convert.hf_bert import (ARCHITECTURES, config_from_hf, hf_to_tencentpretrain,
                                             size_mismatches, tencentpretrain_to_hf)
from tencentpretrain.errors import UserError
from tencentpretrain.model_io import load_state_dict_file, save_state_dict
from tencentpretrain.utils.io import atomic_write, write_json

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
            weight_map = _read_json(index)
            weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise UserError(f"{index}: expected a sharded-weights index, a JSON object whose 'weight_map' maps "
                                "each tensor name to its shard file")
            sd = {}
            for shard in sorted(set(weight_map.values())):
                sd.update(load_state_dict_file(os.path.join(path, shard)))
            return sd, path
    raise UserError(f"{path}: no {' or '.join(WEIGHT_FILES)} (or a sharded index) in this folder")


# TencentPretrain's --type: which pre-training heads its converters carry over.
TYPES = {"bert": ["mlm", "sp"], "mlm": ["mlm"]}
TYPE_ARCHITECTURES = {"bert": "BertForPreTraining", "mlm": "BertForMaskedLM"}
HEAD_NAMES = {"mlm": "MLM head (cls.predictions.*)", "sp": "next-sentence head (pooler + cls.seq_relationship.*)"}


def _check_import_type(tp_type, report, where):
    """--type bert|mlm converts those heads, as TencentPretrain's script does: they must be there."""
    missing = [h for h in TYPES[tp_type] if h not in report.heads]
    if missing:
        hint = ("--type mlm" if "mlm" in report.heads else
                f"--target {','.join(TYPES[tp_type])} to start {'it' if len(missing) == 1 else 'them'} from "
                f"random weights")
        raise UserError(f"--type {tp_type} converts the {' and the '.join(HEAD_NAMES[h] for h in TYPES[tp_type])}, "
                        f"but {where} ({report.architecture or 'BertModel'}) has no "
                        f"{' and no '.join(HEAD_NAMES[h] for h in missing)}; use {hint}")


def convert_hf_to_tencentpretrain(input_path, output_model_path, output_config_path=None,
                                  hf_config_path=None, target=None, layernorm="normal_torch", log=print,
                                  layers_num=None, tp_type=None):
    """Convert a HF BERT; writes our weights and (when a HF config.json is known) our config json.

    `layers_num` and `tp_type` are TencentPretrain's --layers_num and --type: checked against the
    checkpoint (tp_type "bert" keeps the MLM and next-sentence heads, "mlm" the MLM head only).
    """
    if tp_type is not None:
        target = TYPES[tp_type]
    sd, folder = read_hf_weights(input_path)
    ours, report = hf_to_tencentpretrain(sd, where=input_path, target=target, layernorm=layernorm)
    check_layers_num(layers_num, report.layers_num, input_path)
    if tp_type is not None:
        _check_import_type(tp_type, report, input_path)
    hf_config_path = hf_config_path or os.path.join(folder, "config.json")
    config = None
    if os.path.isfile(hf_config_path):
        hf_cfg = _read_json(hf_config_path)
        config = config_from_hf(hf_cfg, report, layernorm, where=hf_config_path)
        wrong = size_mismatches(hf_cfg, sd)
        if wrong:
            raise UserError(f"{hf_config_path} does not match the weights of {input_path}: {'; '.join(wrong)}. "
                            "Nothing written; pass --hf_config_path with the model's own config.json")
        output_config_path = output_config_path or os.path.splitext(output_model_path)[0] + "_config.json"
        load_model_config(None, config)  # validate before writing anything
    elif output_config_path:
        raise UserError(f"no HF config.json at {hf_config_path}; pass --hf_config_path to write "
                        f"{output_config_path}")
    save_state_dict(ours, output_model_path)
    log(f"{report.architecture or 'BertModel'}: {report.layers_num} layers, heads "
        f"{', '.join(report.heads) or 'none'} -> {output_model_path} ({len(ours)} tensors)")
    if config is not None:
        write_json(output_config_path, config)
        log(f"config -> {output_config_path} (layernorm {layernorm}, eps {config['layernorm_eps']:g}, "
            f"target {config['target']}); train with --config_path {output_config_path}")
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


def _export_config(config_path, input_model_path, sd, log):
    """The ModelConfig to export with: given, found beside the checkpoint, or inferred (checkpoint_config)."""
    if isinstance(config_path, ModelConfig):
        return config_path, "the given config"
    if config_path is None:
        config_path, tried = find_config(input_model_path)
        if config_path is None:
            cfg, text = infer_config(sd, input_model_path, tried)
            log(f"note: {text}")
            return cfg, "the inferred config"
        log(f"config: {config_path} (found beside the checkpoint)")
    return load_model_config(config_path), config_path


def convert_tencentpretrain_to_hf(input_model_path, config_path, output_path, architecture=None,
                                  fmt=None, strict_layernorm=False, vocab_path=None, log=print,
                                  layers_num=None, tp_type=None):
    """Export ours to a HF folder (config.json + weights [+ vocab.txt]) or a single weights file.

    `config_path` None: found beside the checkpoint or inferred (see checkpoint_config). A model with
    TencentPretrain's LayerNorm is exported with rescaled gains and the measured deviation is logged,
    unless `strict_layernorm` refuses it. `layers_num`/`tp_type` are TencentPretrain's --layers_num
    and --type (bert: BertForPreTraining, mlm: BertForMaskedLM), checked against the checkpoint.
    """
    single = output_path.endswith((".bin", ".safetensors"))
    if not single and os.path.exists(output_path) and not os.path.isdir(output_path):
        raise UserError(f"--output_model_path {output_path} is a file; give a folder for the Hugging Face model "
                        "(or a path ending in .bin/.safetensors for the weights alone)")
    if vocab_path and not os.path.isfile(vocab_path):
        raise UserError(f"--vocab_path {vocab_path} does not exist; give the vocabulary to copy into the folder")
    sd = load_state_dict_file(input_model_path)
    cfg, cfg_where = _export_config(config_path, input_model_path, sd, log)
    for name, size in table_sizes(sd).items():  # set at run time (vocabulary, --max_seq_length), as in training
        if getattr(cfg, name) not in (None, size):
            log(f"note: {name} {size} from the weights ({cfg_where} says {getattr(cfg, name)})")
        setattr(cfg, name, size)
    check_layers_num(layers_num, checkpoint_layers(sd), input_model_path, cfg.layers_num, cfg_where)
    if tp_type is not None:
        architecture = TYPE_ARCHITECTURES[tp_type]
        missing = [h for h in TYPES[tp_type] if not any(k.startswith(f"target.{h}.") for k in sd)]
        if missing:
            raise UserError(f"--type {tp_type} writes the {' and the '.join(f'target.{h}.*' for h in TYPES[tp_type])} "
                            f"heads, but {input_model_path} has no {' and no '.join(f'target.{h}.*' for h in missing)}"
                            + ("; use --type mlm" if tp_type == "bert" and "mlm" not in missing else ""))
    hf_sd, hf_cfg, notes = tencentpretrain_to_hf(sd, cfg, architecture, strict_layernorm, where=input_model_path)
    wrong = size_mismatches(hf_cfg, hf_sd, our_names=True)
    if wrong:
        raise UserError(f"{cfg_where} does not match the weights of {input_model_path}: {'; '.join(wrong)}. "
                        "Nothing written (config.json would contradict its weights); pass the --config_path the "
                        "model was trained with (for a WID student: the one merge_compactors.py wrote beside it)")
    for note in notes:
        log(note if note.startswith("warning:") else f"note: {note}")
    if cfg.layernorm == "normal":
        log(layernorm_deviation.measure(sd, cfg).describe())
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
        write_json(os.path.join(output_path, "config.json"), hf_cfg)
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


LAYERS_HELP = ("TencentPretrain's flag: the number of encoder layers, checked against the checkpoint "
               "(and the config); default: read from the checkpoint")


def import_main(argv=None):
    p = argparse.ArgumentParser(description="Convert a Hugging Face BERT (folder or .bin/.safetensors "
                                            "file) to this toolkit's keys and config. Takes TencentPretrain's "
                                            "flags (--layers_num, --type) with their meaning.",
                                epilog="Guide: docs/converting.md")
    p.add_argument("--input_model_path", required=True, help="HF model folder or weights file")
    p.add_argument("--output_model_path", required=True, help="our weights (.bin or .safetensors)")
    p.add_argument("--output_config_path", help="our model config json "
                                                "(default: <output_model_path stem>_config.json)")
    p.add_argument("--hf_config_path", help="HF config.json (default: the one beside the weights)")
    p.add_argument("--layers_num", type=int, help=LAYERS_HELP)
    heads = p.add_mutually_exclusive_group()
    heads.add_argument("--type", choices=list(TYPES),
                       help="TencentPretrain's flag: bert converts the MLM and next-sentence heads (pooler -> "
                            "target.sp.linear_1, cls.seq_relationship -> target.sp.linear_2), mlm the MLM head "
                            "only (pooler and NSP head left out); the checkpoint must have them")
    heads.add_argument("--target", help="pre-training heads to keep, e.g. mlm or mlm,sp; a head the checkpoint "
                                        "lacks starts from random weights (default: those present; mlm for a "
                                        "bare encoder)")
    p.add_argument("--layernorm", choices=("normal_torch", "normal"), default="normal_torch",
                   help="normal_torch reproduces HF exactly; normal (TencentPretrain's) rescales the "
                        "gains and matches to ~1e-6")
    a = p.parse_args(argv)
    convert_hf_to_tencentpretrain(a.input_model_path, a.output_model_path, a.output_config_path,
                                  a.hf_config_path, _targets(a.target) if a.target else None, a.layernorm,
                                  layers_num=a.layers_num, tp_type=a.type)


def export_main(argv=None):
    p = argparse.ArgumentParser(description="Convert this toolkit's BERT to a Hugging Face folder "
                                            "(config.json + weights) or a single weights file. Takes "
                                            "TencentPretrain's flags (--layers_num, --type) with their meaning.",
                                epilog="Guide: docs/converting.md")
    p.add_argument("--input_model_path", required=True, help="this toolkit's weights (.bin or .safetensors)")
    p.add_argument("--config_path", help="our model config json (default: <model stem>_config.json beside the "
                                         "checkpoint, then the same for <output_model_path> of a "
                                         "<output_model_path>-<step> checkpoint; if none exists, inferred from "
                                         "the weights' shapes with TencentPretrain's defaults, and printed)")
    p.add_argument("--output_model_path", required=True,
                   help="a folder, or a file ending in .bin/.safetensors (weights only)")
    p.add_argument("--layers_num", type=int, help=LAYERS_HELP)
    heads = p.add_mutually_exclusive_group()
    heads.add_argument("--type", choices=list(TYPES),
                       help="TencentPretrain's flag: bert writes the MLM and next-sentence heads "
                            "(BertForPreTraining), mlm the MLM head only (BertForMaskedLM)")
    heads.add_argument("--architecture", choices=list(ARCHITECTURES),
                       help="default: from the heads present (e.g. mlm+sp -> BertForPreTraining)")
    p.add_argument("--format", choices=("safetensors", "bin"), help="weights format in a folder "
                                                                  "(default: safetensors when installed)")
    p.add_argument("--vocab_path", help="copy this vocabulary into the folder as vocab.txt")
    p.add_argument("--strict_layernorm", action="store_true",
                   help="refuse a model with TencentPretrain's LayerNorm (layernorm 'normal'). By default it "
                        "is exported as nn.LayerNorm with the gains rescaled by sqrt((n-1)/n), and the "
                        "measured difference from the Hugging Face model is printed")
    p.add_argument("--force", action="store_true", help=argparse.SUPPRESS)  # was needed for 'normal' models
    a = p.parse_args(argv)
    from tencentpretrain.resources import resolve
    convert_tencentpretrain_to_hf(a.input_model_path, resolve(a.config_path), a.output_model_path,
                                  a.architecture, a.format, a.strict_layernorm, resolve(a.vocab_path),
                                  layers_num=a.layers_num, tp_type=a.type)
