"""What the model-reading utility scripts share: their options, and loading a model, a vocab or the word
embedding from TencentPretrain's flags with clear errors.

Used by scripts/extract_features.py, cloze_test.py, generate_lm.py (a whole model from --config_path,
--load_model_path and the tokenizer flags) and extract_embeddings.py, topn_words_indep.py (the word
embedding matrix and the vocab only).
"""
import argparse

import torch

from tencentpretrain import resources
from tencentpretrain.config import validate
from tencentpretrain.data.tokenizers import SentencePieceTokenizer, build_tokenizer
from tencentpretrain.data.vocab import Vocab
from tencentpretrain.errors import UserError
from tencentpretrain.model_builder import build_model
from tencentpretrain.model_io import load_model_weights, load_state_dict_file
from tencentpretrain.opts import model_config_from_args, model_opts, tokenizer_opts
from tencentpretrain.resources import resolve
from tencentpretrain.tasks.engine import pick_device

WORD_EMBEDDING_KEY = "embedding.word.embedding.weight"


def infer_opts(parser, seq_length=128, batch_size=64):
    """TencentPretrain's inference options (paths, batch size, sequence length), the model options
    (which override the config file) and the tokenizer options. batch_size None: --batch_size is
    accepted, as TencentPretrain does, but unused."""
    g = parser.add_argument_group("inference")
    g.add_argument("--load_model_path", "--pretrained_model_path", dest="load_model_path", required=True,
                   help="model weights (.bin or .safetensors)")
    g.add_argument("--test_path", required=True, help="input text file, one sentence per line")
    g.add_argument("--prediction_path", required=True, help="output file")
    g.add_argument("--batch_size", type=int, default=batch_size or 1,
                   help="sentences per forward pass" if batch_size else "unused: one sequence at a time")
    g.add_argument("--seq_length", type=int, default=seq_length, help="longest input in tokens")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    model_opts(parser).description = "--config_path is required: the config the checkpoint was trained with"
    tokenizer_opts(parser)
    return g


def check_positive(args, *names):
    for name in names:
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")


def build_tokenizer_from_args(args):
    return build_tokenizer(args.tokenizer, vocab_path=resolve(args.vocab_path),
                           spm_model_path=resolve(args.spm_model_path), do_lower_case=args.do_lower_case)


def _vocab_source(tokenizer_or_vocab):
    vocab = getattr(tokenizer_or_vocab, "vocab", tokenizer_or_vocab)
    return vocab.path or "the vocabulary"


def check_vocab_fits(sd, vocab_size, vocab_source, model_path):
    """The checkpoint's word embedding must have one row per vocab token."""
    if WORD_EMBEDDING_KEY not in sd:
        raise UserError(f"{model_path} has no word embedding ({WORD_EMBEDDING_KEY}); pass a TencentPretrain-"
                        f"format checkpoint (convert others with scripts/convert_*.py)")
    rows = sd[WORD_EMBEDDING_KEY].shape[0]
    if rows != vocab_size:
        raise UserError(f"vocab size mismatch: {model_path} has {rows} word-embedding rows but {vocab_source} has "
                        f"{vocab_size} tokens; pass the --vocab_path (or --spm_model_path) the model was trained "
                        f"with")


def load_inference_model(args, target=None, log=print):
    """(model in eval mode on args.device, tokenizer) from --config_path, --load_model_path and the
    tokenizer flags.

    target: the head the script needs ("mlm", "lm"): the model is built with that head only and the
    checkpoint must carry it; other heads in the checkpoint are ignored. None: embedding and encoder
    only (any head, pre-training or fine-tuning, is ignored).
    """
    if not args.config_path:
        raise UserError("--config_path is required: the model config the checkpoint was trained with, "
                        "e.g. models/bert/base_config.json")
    tokenizer = build_tokenizer_from_args(args)
    args.config_path = resolve(args.config_path)
    cfg = model_config_from_args(args, vocab_size=tokenizer.vocab_size)
    if target is not None:
        cfg.target = [target]
        validate(cfg, where=args.config_path)
    if args.seq_length > cfg.max_seq_length and "pos" in cfg.embedding:
        raise UserError(f"--seq_length {args.seq_length} exceeds the model's max_seq_length {cfg.max_seq_length} "
                        f"({args.config_path})")
    sd = load_state_dict_file(args.load_model_path)
    check_vocab_fits(sd, tokenizer.vocab_size, _vocab_source(tokenizer), args.load_model_path)
    if target is not None and not any(k.startswith(f"target.{target}.") for k in sd):
        heads = sorted({k.split(".")[1] for k in sd if k.startswith("target.")})
        raise UserError(f"{args.load_model_path} has no {target} head (target.{target}.*; it has: "
                        f"{', '.join(heads) or 'no pre-training head'}); pass a model pre-trained with "
                        f"--target {target}")
    model = build_model(cfg)
    ignored = ("target.", "output_layer")  # other pre-training heads, fine-tuning heads
    report = load_model_weights(model, sd, allow_missing=("target.",) if target is None else (),
                                allow_unexpected=ignored, where=args.load_model_path)
    if report.unexpected:
        log(f"note: {len(report.unexpected)} tensors of heads this script does not use were ignored "
            f"({', '.join(sorted({k.rsplit('.', 2)[0] for k in report.unexpected}))})")
    return model.to(pick_device(args.device)).eval(), tokenizer


def embedding_opts(parser):
    """The flags of the scripts that read only a checkpoint's word table and its vocabulary."""
    parser.add_argument("--load_model_path", required=True, help="model weights (.bin or .safetensors)")
    parser.add_argument("--vocab_path", default=None,
                        help="vocabulary file (default: models/google_uncased_en_vocab.txt)")
    parser.add_argument("--spm_model_path", default=None, help="SentencePiece model (its pieces are the vocab)")


def load_vocab(vocab_path=None, spm_model_path=None):
    """The token list of --vocab_path (default: the shipped uncased vocab), or of a SentencePiece model."""
    if spm_model_path:
        return SentencePieceTokenizer(spm_model_path).vocab
    return Vocab.load(vocab_path or resources.default_vocab_path())


def load_word_embedding(model_path, vocab):
    """The checkpoint's word embedding matrix [vocab size, emb size] as float32, checked against `vocab`."""
    sd = load_state_dict_file(model_path)
    check_vocab_fits(sd, len(vocab), _vocab_source(vocab), model_path)
    return sd[WORD_EMBEDDING_KEY].float()


def encode_lines(lines, tokenizer, seq_length):
    """`[CLS] tokens [SEP]` ids (cut to seq_length, [SEP] kept) for each non-blank line.

    Returns (ids per kept line, 1-based numbers of the kept lines)."""
    rows, kept = [], []
    for number, line in enumerate(lines, 1):
        ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(line))
        if not ids:
            continue
        rows.append([tokenizer.cls_id] + ids[:seq_length - 2] + [tokenizer.sep_id])
        kept.append(number)
    return rows, kept


def padded_batches(rows, batch_size, pad_id, device="cpu"):
    """(src, seg) batches of `rows`, in order, each padded to its longest row (seg 0 on padding)."""
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        width = max(len(r) for r in chunk)
        src = torch.tensor([r + [pad_id] * (width - len(r)) for r in chunk], dtype=torch.long)
        seg = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in chunk], dtype=torch.long)
        yield src.to(device), seg.to(device)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help keeps the scripts' docstring layout and shows the default of every option that has one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and not action.required:
            text += " (default: %(default)s)"
        return text
