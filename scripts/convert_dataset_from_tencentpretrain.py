"""Convert TencentPretrain's pickled dataset.pt (bert or mlm processor) to this toolkit's dataset file.

    python scripts/convert_dataset_from_tencentpretrain.py --input_path dataset.pt \\
        --output_path dataset.tpd --data_processor bert --vocab_path models/google_uncased_en_vocab.txt

The pickles are read without running any code (only lists, tuples and integers are accepted; anything
else is refused), so a corpus preprocessed by TencentPretrain need not be preprocessed again. Give the
vocabulary TencentPretrain's preprocess.py used. Static or dynamic masking is read from the file.

Guide: docs/converting.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

from tencentpretrain.errors import run_cli  # noqa: E402
from tencentpretrain.registry import TOKENIZERS  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_path", required=True, help="TencentPretrain's dataset.pt (its --dataset_path)")
    p.add_argument("--output_path", required=True, help="the dataset file to write, e.g. dataset.tpd")
    p.add_argument("--data_processor", choices=["bert", "mlm"], required=True,
                   help="the --data_processor TencentPretrain's preprocess.py ran with")
    p.add_argument("--vocab_path", default=None,
                   help="the vocabulary TencentPretrain used (default: models/google_uncased_en_vocab.txt)")
    p.add_argument("--spm_model_path", default=None, help="the SentencePiece model TencentPretrain used")
    p.add_argument("--tokenizer", choices=TOKENIZERS.names(), default="bert", help="the tokenizer the dataset was made with (recorded in the header)")
    p.add_argument("--do_lower_case", choices=["true", "false"], default="true",
                   help="recorded in the header (the ids are already tokenized)")
    p.add_argument("--seq_length", type=int, default=None,
                   help="check that the file's instances are this long (default: read from the file)")
    p.add_argument("--whole_word_masking", action="store_true",
                   help="dynamic masking: our loader masks whole words (TencentPretrain's pretrain.py flag)")
    return p


def main(argv=None):
    from tencentpretrain.convert.tp_dataset import convert_dataset
    from tencentpretrain.data.pipeline import build_tokenizer_for
    from tencentpretrain.resources import default_vocab_path, resolve
    a = build_parser().parse_args(argv)
    a.vocab_path, a.spm_model_path = resolve(a.vocab_path), resolve(a.spm_model_path)
    a.do_lower_case = a.do_lower_case == "true"
    tokenizer = build_tokenizer_for(a)
    convert_dataset(a.input_path, a.output_path, a.data_processor, tokenizer,
                    a.spm_model_path or a.vocab_path or default_vocab_path(), a.whole_word_masking,
                    a.seq_length, a.tokenizer, a.do_lower_case)


if __name__ == "__main__":
    run_cli(main)
