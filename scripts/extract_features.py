r"""Sentence vectors from a pre-trained encoder, saved as one float tensor [sentences, hidden size].

    python scripts/extract_features.py --load_model_path models/model.bin --config_path models/bert/base_config.json \
        --test_path sentences.txt --prediction_path features.pt [--pooling first|mean|max|last] [--whitening_size 256]

Each non-blank line of --test_path is one sentence, encoded as "[CLS] tokens [SEP]" (cut to --seq_length);
blank lines get no vector. --pooling (default: the config's "pooling", else first) turns the encoder's
output into one vector: the [CLS] position, the mean or maximum over the tokens, or the last token.
--whitening_size k applies BERT-whitening (subtract the mean, rotate and scale by the covariance's
SVD, keep k dimensions) and L2-normalises. Read the output with torch.load(path).

Guide: docs/migrating.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

import torch  # noqa: E402

from tencentpretrain.errors import UserError, run_cli  # noqa: E402
from tencentpretrain.inference_utils import (HelpFormatter, check_positive, encode_lines, infer_opts,  # noqa: E402
                                            load_inference_model, padded_batches)
from tencentpretrain.targets.cls_target import pool  # noqa: E402
from tencentpretrain.tasks.readers import read_text_lines  # noqa: E402
from tencentpretrain.utils.io import atomic_write  # noqa: E402

POOLINGS = ("first", "mean", "max", "last")


def whiten(vectors, size):
    """BERT-whitening of [N, H] vectors down to `size` dimensions, rows L2-normalised (float64 inside)."""
    x = vectors.double()
    mean = x.mean(0, keepdim=True)
    u, s, _ = torch.linalg.svd(torch.cov(x.T))
    rank = int((s > s[0] * 1e-10).sum()) if s[0] > 0 else 0
    if size > rank:
        raise UserError(f"--whitening_size {size} exceeds the rank {rank} of the feature covariance "
                        f"({len(x)} sentences); use at most {rank}, or more sentences")
    out = (x - mean) @ (u[:, :size] / s[:size].sqrt())
    return torch.nn.functional.normalize(out, dim=1).to(vectors.dtype)


@torch.no_grad()
def extract(model, tokenizer, lines, seq_length, batch_size, pooling):
    """(pooled vectors [sentences, hidden], 1-based numbers of the lines they come from)."""
    rows, kept = encode_lines(lines, tokenizer, seq_length)
    if not rows:
        raise UserError("--test_path has no sentence with a token in it")
    device = next(model.parameters()).device
    out = [pool(model.encode(src, seg), seg, pooling).float().cpu()
           for src, seg in padded_batches(rows, batch_size, tokenizer.pad_id, device)]
    return torch.cat(out), kept


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    infer_opts(parser)
    if not any("--pooling" in a.option_strings for a in parser._actions):  # unless the model options have it
        parser.add_argument("--pooling", choices=POOLINGS, default=argparse.SUPPRESS,
                            help="sentence vector: first token, mean, max, or last token (default: the config's)")
    parser.add_argument("--whitening_size", type=int, default=None,
                        help="whiten the vectors and keep this many dimensions")
    args = parser.parse_args(argv)
    check_positive(args, "batch_size", "seq_length")
    if args.whitening_size is not None:
        check_positive(args, "whitening_size")
    lines = read_text_lines(args.test_path, "--test_path")
    model, tokenizer = load_inference_model(args)
    vectors, kept = extract(model, tokenizer, lines, args.seq_length, args.batch_size, model.cfg.pooling)
    if len(kept) < len(lines):
        print(f"note: {len(lines) - len(kept)} blank lines of {args.test_path} have no vector")
    if args.whitening_size is not None:
        vectors = whiten(vectors, args.whitening_size)
    with atomic_write(args.prediction_path, "wb") as f:
        torch.save(vectors, f)
    print(f"The size of feature vectors (sentences_num * vector size): {tuple(vectors.shape)} "
          f"({model.cfg.pooling} pooling) -> {args.prediction_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
