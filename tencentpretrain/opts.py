"""argparse option groups shared by every CLI, with TencentPretrain's flag names.

Model options default to "not given" (argparse.SUPPRESS), so that only flags the user typed
override the config file: defaults < config file < explicit CLI flags.
"""
import argparse

from tencentpretrain import features
from tencentpretrain.config import FIELDS, load_model_config
from tencentpretrain.registry import DECODERS, EMBEDDINGS, ENCODERS, PROCESSORS, TARGETS, TOKENIZERS
from tencentpretrain.utils.log import LEVELS


def _bool(text):
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


# One line of --help per model option (the config reference: docs/config.md).
_MODEL_HELP = {
    "embedding": "embeddings summed before the LayerNorm", "tgt_embedding": "the decoder's target embeddings",
    "encoder": "encoder (wid_transformer: WID)", "decoder": "decoder of an encoder-decoder model",
    "target": "pre-training targets; their losses are summed", "mask": "attention mask: BERT or GPT style",
    "layernorm_positioning": "post (BERT) or pre (GPT-2)",
    "layernorm": "normal: TencentPretrain's; normal_torch: nn.LayerNorm (Hugging Face)",
    "hidden_act": "FFN activation", "emb_size": "embedding width", "hidden_size": "residual stream width",
    "feedforward_size": "FFN inner width", "heads_num": "attention heads",
    "attention_head_size": "per-head width (default hidden_size / heads_num)", "layers_num": "encoder layers",
    "decoder_layers_num": "decoder layers", "max_seq_length": "rows of the position table",
    "labels_num": "classes of a classifier (default: from the data)", "dropout": "hidden and attention dropout",
    "layernorm_eps": "LayerNorm eps", "tie_weights": "the MLM decoder shares the word embedding table",
    "remove_embedding_layernorm": "no LayerNorm after the embedding sum (GPT-2)",
    "share_embedding": "the target embedding shares the encoder's word table",
    "has_lmtarget_bias": "a bias on the lm output layer",
}


def model_opts(parser):
    g = parser.add_argument_group("model (override the --config_path file; docs/config.md)")
    g.add_argument("--config_path", default=None,
                   help="JSON/YAML model config, e.g. models/bert/base_config.json")
    s = argparse.SUPPRESS
    g.add_argument("--embedding", nargs="+", choices=EMBEDDINGS.names(), default=s, help=_MODEL_HELP["embedding"])
    g.add_argument("--tgt_embedding", nargs="+", choices=EMBEDDINGS.names(), default=s,
                   help=_MODEL_HELP["tgt_embedding"])
    g.add_argument("--encoder", choices=ENCODERS.names(), default=s, help=_MODEL_HELP["encoder"])
    g.add_argument("--decoder", choices=DECODERS.names(), default=s, help=_MODEL_HELP["decoder"])
    g.add_argument("--target", nargs="+", choices=TARGETS.names(), default=s, help=_MODEL_HELP["target"])
    g.add_argument("--mask", choices=("fully_visible", "causal"), default=s, help=_MODEL_HELP["mask"])
    g.add_argument("--data_processor", choices=PROCESSORS.names(), default=s,
                   help="the processor the dataset was made with (must match the dataset)")
    g.add_argument("--layernorm_positioning", choices=("post", "pre"), default=s, help=_MODEL_HELP["layernorm_positioning"])
    g.add_argument("--layernorm", choices=("normal", "normal_torch"), default=s, help=_MODEL_HELP["layernorm"])
    g.add_argument("--hidden_act", choices=("gelu", "gelu_fast", "relu", "silu"), default=s, help=_MODEL_HELP["hidden_act"])
    for name in ("emb_size", "hidden_size", "feedforward_size", "heads_num", "attention_head_size",
                 "layers_num", "decoder_layers_num", "max_seq_length", "labels_num"):
        g.add_argument(f"--{name}", type=int, default=s, help=_MODEL_HELP[name])
    g.add_argument("--dropout", type=float, default=s, help=_MODEL_HELP["dropout"])
    g.add_argument("--layernorm_eps", type=float, default=s, help=_MODEL_HELP["layernorm_eps"])
    for name in ("tie_weights", "remove_embedding_layernorm", "share_embedding", "has_lmtarget_bias"):
        g.add_argument(f"--{name}", type=_bool, nargs="?", const=True, default=s,
                       metavar="{true,false}", help=_MODEL_HELP[name])
    return g


def tokenizer_opts(parser):
    g = parser.add_argument_group("tokenizer")
    g.add_argument("--tokenizer", choices=TOKENIZERS.names() or None, default="bert",
                   help="bert: basic + WordPiece; char: characters; space: whitespace-separated words")
    g.add_argument("--vocab_path", default=None,
                   help="vocabulary file (default: models/google_uncased_en_vocab.txt)")
    g.add_argument("--spm_model_path", default=None, help="SentencePiece model (replaces the vocab)")
    g.add_argument("--do_lower_case", type=_bool, nargs="?", const=True, default=True,
                   metavar="{true,false}", help="lower-case (and strip accents); false for cased vocabularies")
    return g


def log_opts(parser):
    """TencentPretrain's logging flags (see tencentpretrain/utils/log.py); returns the group."""
    g = parser.add_argument_group("logging")
    g.add_argument("--log_path", default=None,
                   help="also write the progress lines and notes to this file (appended; default: none)")
    g.add_argument("--log_level", choices=LEVELS, default="INFO",
                   help="terminal verbosity: ERROR < INFO < DEBUG < NOTSET")
    g.add_argument("--log_file_level", choices=LEVELS, default="INFO",
                   help="--log_path verbosity: ERROR < INFO < DEBUG < NOTSET")
    return g


def parse_args(parser, argv=None):
    """Parse `argv`, with the options of the features it uses (see features.parse_args)."""
    return features.parse_args(parser, argv)


def model_config_from_args(args, **extra):
    """The ModelConfig for parsed `args`: config file, then model flags the user typed."""
    overrides = {k: v for k, v in vars(args).items() if k in FIELDS}
    overrides.update({k: v for k, v in extra.items() if v is not None})
    return load_model_config(getattr(args, "config_path", None), overrides)
