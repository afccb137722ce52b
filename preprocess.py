"""Turn a text corpus into a pre-training dataset file (TencentPretrain's preprocess.py flags).

    python preprocess.py --corpus_path corpora/moby_dick.txt --dataset_path moby.tpd
                         --data_processor bert --seq_length 128 --processes_num 2

Guide: docs/preprocessing.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402

from tencentpretrain.errors import run_cli  # noqa: E402
from tencentpretrain.registry import PROCESSORS, TOKENIZERS  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus_path", required=True, help="UTF-8 text corpus")
    p.add_argument("--dataset_path", default="dataset.tpd", help="output dataset file")
    p.add_argument("--vocab_path", default=None, help="vocab file (default: models/google_uncased_en_vocab.txt)")
    p.add_argument("--spm_model_path", default=None, help="SentencePiece model (its pieces replace --tokenizer)")
    p.add_argument("--tokenizer", choices=TOKENIZERS.names(), default="bert",
                   help="bert: basic + WordPiece; char: characters; space: whitespace-separated words")
    p.add_argument("--do_lower_case", choices=["true", "false"], default="true",
                   help="lower-case (and strip accents) before tokenizing; 'false' for cased vocabs")
    p.add_argument("--processes_num", type=int, default=1, help="worker processes (same output for any number)")
    p.add_argument("--data_processor", choices=PROCESSORS.names(), default="bert",
                   help="mlm: one document per line; bert: MLM + next sentence; lm: one token stream")
    p.add_argument("--seq_length", type=int, default=128, help="tokens per instance, special tokens included")
    p.add_argument("--dup_factor", type=int, default=5, help="copies of the corpus (static masking / bert pairs)")
    p.add_argument("--short_seq_prob", type=float, default=0.1, help="bert: chance of a shorter target length")
    p.add_argument("--full_sentences", action="store_true", help="mlm: pack lines across line boundaries")
    p.add_argument("--dynamic_masking", action="store_true", help="store unmasked; the loader masks each epoch")
    p.add_argument("--whole_word_masking", action="store_true", help="mask all pieces of a word together")
    p.add_argument("--seed", type=int, default=7, help="seeds pairing and static masks")
    return p


def main(argv=None):
    from tencentpretrain.data.pipeline import PreprocessOptions, preprocess
    a = build_parser().parse_args(argv)
    preprocess(PreprocessOptions(
        corpus_path=a.corpus_path, dataset_path=a.dataset_path, data_processor=a.data_processor,
        tokenizer=a.tokenizer, vocab_path=a.vocab_path, spm_model_path=a.spm_model_path,
        do_lower_case=a.do_lower_case == "true", seq_length=a.seq_length, dup_factor=a.dup_factor,
        short_seq_prob=a.short_seq_prob, full_sentences=a.full_sentences, dynamic_masking=a.dynamic_masking,
        whole_word_masking=a.whole_word_masking, seed=a.seed, processes_num=a.processes_num))


if __name__ == "__main__":
    run_cli(main)
