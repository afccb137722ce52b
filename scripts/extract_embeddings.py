r"""Write a checkpoint's word embedding matrix as text, one vocab token per line (word2vec text format).

    python scripts/extract_embeddings.py --load_model_path models/model.bin \
        --vocab_path models/google_uncased_en_vocab.txt --word_embedding_path embeddings.txt

The first line is "<rows> <dimension>"; then, for each token in vocab order, the token and its row's
values separated by spaces. The vocab must be the one the model was trained with (one row per token).

Guide: docs/migrating.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

from tencentpretrain.errors import run_cli  # noqa: E402
from tencentpretrain.inference_utils import HelpFormatter, embedding_opts, load_vocab, load_word_embedding  # noqa: E402
from tencentpretrain.utils.io import atomic_write  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    embedding_opts(parser)
    parser.add_argument("--word_embedding_path", required=True, help="output text file")
    args = parser.parse_args(argv)
    vocab = load_vocab(args.vocab_path, args.spm_model_path)
    embedding = load_word_embedding(args.load_model_path, vocab)
    rows, dim = embedding.shape
    with atomic_write(args.word_embedding_path, "w", encoding="utf-8", newline="\n") as f:
        f.write(f"{rows} {dim}\n")
        for token, values in zip(vocab.i2w, embedding.tolist()):
            f.write(token + " " + " ".join(map(str, values)) + "\n")
    print(f"{rows} x {dim} word embeddings written to {args.word_embedding_path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
