r"""Nearest vocab words by cosine similarity of the word embeddings (context-independent).

    python scripts/topn_words_indep.py --load_model_path models/model.bin \
        --vocab_path models/google_uncased_en_vocab.txt --test_path words.txt [--topn 15]

--test_path holds one target word per line (the first whitespace-separated field; blank lines are
skipped). For each word this prints "Target word: <word>", then --topn lines "<word>\t<cosine>" from the
most similar down (the target itself left out), then a blank line.

Guide: docs/migrating.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

import torch  # noqa: E402

from tencentpretrain.errors import UserError, run_cli  # noqa: E402
from tencentpretrain.inference_utils import HelpFormatter, embedding_opts, load_vocab, load_word_embedding  # noqa: E402
from tencentpretrain.tasks.readers import read_text_lines  # noqa: E402


def nearest(embedding, index, topn):
    """[(row, cosine)] of the `topn` rows most similar to row `index`, itself excluded (ties by row)."""
    sims = torch.nn.functional.cosine_similarity(embedding[index][None], embedding, dim=-1)
    order = torch.argsort(sims, descending=True, stable=True)
    order = order[order != index][:topn]
    return [(int(i), float(sims[i])) for i in order]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    embedding_opts(parser)
    parser.add_argument("--test_path", required=True, help="target words, one per line")
    parser.add_argument("--topn", type=int, default=15, help="neighbours printed per word")
    args = parser.parse_args(argv)
    if args.topn < 1:
        raise UserError(f"--topn must be at least 1, got {args.topn}")
    words = [(n, line.split()[0]) for n, line in enumerate(read_text_lines(args.test_path, "--test_path"), 1)
             if line.strip()]
    vocab = load_vocab(args.vocab_path, args.spm_model_path)
    unknown = [f"'{w}' (line {n})" for n, w in words if w not in vocab]
    if unknown:
        raise UserError(f"{args.test_path}: {len(unknown)} target words are not in the vocabulary "
                        f"{vocab.path}: {', '.join(unknown[:10])}; use tokens listed in the vocab")
    embedding = load_word_embedding(args.load_model_path, vocab)
    for _, word in words:
        print("Target word: " + word)
        for i, sim in nearest(embedding, vocab.w2i[word], args.topn):
            print(f"{vocab.i2w[i].strip()}\t{sim}")
        print()
    return 0


if __name__ == "__main__":
    run_cli(main)
