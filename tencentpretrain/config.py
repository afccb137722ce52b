"""The model configuration: defaults < JSON/YAML file < explicit CLI flags.

Keys are TencentPretrain's, so its `models/*/config.json` files load unchanged. Unknown keys and
invalid values are errors that name the key and the file.
"""
import dataclasses
import difflib
import json
import os
import typing
from dataclasses import dataclass, field
from typing import List, Optional

from tencentpretrain import features
from tencentpretrain.errors import UserError
from tencentpretrain.registry import DECODERS, EMBEDDINGS, ENCODERS, TARGETS
from tencentpretrain.utils.io import write_json

ACTIVATIONS = ("gelu", "gelu_fast", "relu", "silu")
MASKS = ("fully_visible", "causal")
LAYERNORM_POSITIONING = ("post", "pre")
# "normal": TencentPretrain's LayerNorm (unbiased std, eps added outside the square root).
# "normal_torch": nn.LayerNorm semantics (biased variance, eps inside), as Hugging Face BERT.
LAYERNORMS = ("normal", "normal_torch")


@dataclass
class ModelConfig:
    emb_size: int = 768
    hidden_size: int = 768
    feedforward_size: int = 3072
    heads_num: int = 12
    attention_head_size: Optional[int] = None  # None: hidden_size // heads_num
    layers_num: int = 12
    decoder_layers_num: Optional[int] = None  # None: layers_num
    max_seq_length: int = 512
    dropout: float = 0.1
    hidden_act: str = "gelu"
    embedding: List[str] = field(default_factory=lambda: ["word", "pos", "seg"])
    tgt_embedding: List[str] = field(default_factory=list)
    encoder: str = "transformer"
    decoder: Optional[str] = None
    mask: str = "fully_visible"
    layernorm_positioning: str = "post"
    layernorm: str = "normal"
    layernorm_eps: Optional[float] = None  # None: 1e-6 for "normal", 1e-12 for "normal_torch"
    remove_embedding_layernorm: bool = False
    target: List[str] = field(default_factory=lambda: ["mlm", "sp"])
    tie_weights: bool = False
    share_embedding: bool = False  # decoder's target embedding shares the encoder's word table
    has_lmtarget_bias: bool = False
    pooling: str = "first"
    labels_num: Optional[int] = None  # for the `cls` target
    vocab_size: Optional[int] = None  # set from the vocabulary when not given
    data_processor: str = "bert"  # the processor whose datasets this model trains on
    # Feature blocks (tencentpretrain/features.py), by block name: {"wid": WidConfig}. In a file they are
    # top-level keys ("wid": {...}); in code `cfg.wid` reads a block (None when absent) and sets it.
    features: dict = field(default_factory=dict)

    def __post_init__(self):
        self.features = dict(self.features)  # dataclasses.replace must not share the blocks

    def __getattr__(self, name):  # only called for names that are not attributes
        if name in features.FEATURES:
            return self.__dict__.get("features", {}).get(name)
        raise AttributeError(f"'ModelConfig' has no attribute '{name}'")

    def __setattr__(self, name, value):
        if name in features.FEATURES:
            if value is None:
                self.features.pop(name, None)
            else:
                self.features[name] = value
        else:
            object.__setattr__(self, name, value)

    # ---- derived values -------------------------------------------------------------------
    @property
    def head_size(self):
        return self.attention_head_size or self.hidden_size // self.heads_num

    @property
    def eps(self):
        if self.layernorm_eps is not None:
            return self.layernorm_eps
        return 1e-6 if self.layernorm == "normal" else 1e-12

    def to_dict(self):
        """The config as a file holds it: the fields, then each feature block as a top-level key."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "features"}
        for name, block in self.features.items():
            d[name] = block.to_dict() if hasattr(block, "to_dict") else dict(block)
        return {k: v for k, v in d.items() if v is not None}

    def save(self, path):
        write_json(path, self.to_dict())


WEIGHT_EXTENSIONS = (".safetensors", ".bin", ".pt")


def config_path_beside(model_path):
    """`models/x.bin` -> `models/x_config.json`: the model config every writer of weights records beside
    them (pretrain.py, fine-tuning, merge, the Hugging Face importer), and readers look for."""
    for ext in WEIGHT_EXTENSIONS:
        if model_path.endswith(ext):
            return model_path[: -len(ext)] + "_config.json"
    return model_path + "_config.json"


FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig) if f.name != "features"}
# Keys TencentPretrain's config files carry that concern other stages; accepted and ignored here.
FOREIGN_KEYS = {"seq_length", "tokenizer", "vocab_path", "spm_model_path", "do_lower_case"}


def read_config_file(path):
    """A JSON (or YAML, by extension) mapping, with errors that name the file."""
    if not os.path.isfile(path):
        raise UserError(f"config file not found: {path} (pass --config_path with a JSON file, "
                        f"e.g. models/bert/base_config.json)")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start})") from None
    if path.endswith((".yaml", ".yml")):
        import yaml
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise UserError(f"{path}: malformed YAML: {err}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: "
                            f"{err.msg}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config must be a JSON object of keys to values")
    return data


def _check_type(key, value, where):
    """Coerce and validate one value against the field's annotated type."""
    tp = FIELDS[key].type
    optional = False
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional, tp = True, args[0]
    if value is None:
        if optional:
            return None
        raise UserError(f"{where}: key '{key}' must not be null")
    if typing.get_origin(tp) in (list, List):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{where}: key '{key}' must be a list of names, got {value!r}")
        return list(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"{where}: key '{key}' must be a string, got {value!r}")
        return value
    return value


def _choice(key, value, choices, where):
    if value not in choices:
        raise UserError(f"{where}: key '{key}' is '{value}'; choose one of: {', '.join(choices)}")


def validate(cfg, where="model config"):
    for key in ("emb_size", "hidden_size", "feedforward_size", "heads_num", "layers_num",
                "max_seq_length"):
        if getattr(cfg, key) <= 0:
            raise UserError(f"{where}: key '{key}' must be positive, got {getattr(cfg, key)}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise UserError(f"{where}: key 'dropout' must be in [0, 1), got {cfg.dropout}")
    if cfg.attention_head_size is None and cfg.hidden_size % cfg.heads_num:
        raise UserError(f"{where}: hidden_size {cfg.hidden_size} is not divisible by heads_num "
                        f"{cfg.heads_num}; change one of them or set attention_head_size")
    _choice("hidden_act", cfg.hidden_act, ACTIVATIONS, where)
    _choice("mask", cfg.mask, MASKS, where)
    _choice("layernorm_positioning", cfg.layernorm_positioning, LAYERNORM_POSITIONING, where)
    _choice("layernorm", cfg.layernorm, LAYERNORMS, where)
    _choice("pooling", cfg.pooling, ("first", "mean", "max", "last"), where)
    for key, reg in (("embedding", EMBEDDINGS), ("tgt_embedding", EMBEDDINGS)):
        for name in getattr(cfg, key):
            _choice(key, name, reg.names(), where)
    if not cfg.embedding:
        raise UserError(f"{where}: key 'embedding' must name at least one embedding")
    _choice("encoder", cfg.encoder, ENCODERS.names(), where)
    if cfg.decoder is not None:
        _choice("decoder", cfg.decoder, DECODERS.names(), where)
        if not cfg.tgt_embedding:
            raise UserError(f"{where}: a decoder needs a 'tgt_embedding' list, e.g. [\"word\", \"pos\"]")
    if not cfg.target:
        raise UserError(f"{where}: key 'target' must name at least one target")
    for name in cfg.target:
        _choice("target", name, TARGETS.names(), where)
    if "cls" in cfg.target and not cfg.labels_num:
        raise UserError(f"{where}: the 'cls' target needs 'labels_num'")
    if cfg.tie_weights and "lm" in cfg.target and cfg.emb_size != cfg.hidden_size:
        raise UserError(f"{where}: tie_weights with the 'lm' target needs emb_size == hidden_size")
    return cfg


def load_model_config(path=None, overrides=None):
    """Build a ModelConfig: dataclass defaults, then the file at `path`, then `overrides`.

    A top-level key naming a feature ("wid") is that feature's block, parsed by the feature."""
    values = {}
    sources = {}
    if path:
        for key, value in read_config_file(path).items():
            if key in FOREIGN_KEYS:
                continue
            if key not in FIELDS and key not in features.FEATURES:
                close = difflib.get_close_matches(key, list(FIELDS) + list(features.FEATURES), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise UserError(f"{path}: unknown key '{key}'{hint}")
            values[key], sources[key] = value, path
    for key, value in (overrides or {}).items():
        if key not in FIELDS and key not in features.FEATURES:
            raise UserError(f"unknown model option '{key}'")
        values[key], sources[key] = value, "command line"
    cfg = ModelConfig(**{k: _check_type(k, v, sources[k]) for k, v in values.items() if k in FIELDS})
    for name in features.FEATURES:
        if values.get(name) is not None:
            cfg.features[name] = features.get(name).parse_block(values[name], where=sources[name])
    return validate(cfg, where=path or "model config")


# The embedding tables whose sizes a checkpoint fixes, whatever the config file says.
TABLE_KEYS = {"vocab_size": "embedding.word.embedding.weight", "max_seq_length": "embedding.pos.embedding.weight"}


def table_sizes(state_dict):
    """vocab_size and max_seq_length read from a state dict's embedding tables (those it has)."""
    return {name: state_dict[key].shape[0] for name, key in TABLE_KEYS.items() if key in state_dict}


def config_for_checkpoint(config_path, state_dict, overrides=None):
    """The config at `config_path` made to fit the checkpoint `state_dict`: its vocabulary and position
    table sizes come from the weights (the run may have set them on the command line); `overrides`,
    e.g. flags the user typed, win over both."""
    return load_model_config(config_path, {**table_sizes(state_dict), **(overrides or {})})
