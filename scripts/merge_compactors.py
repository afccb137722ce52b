"""Fold a WID-compacted checkpoint into a smaller dense BERT (weights + config json).

    python scripts/merge_compactors.py --load_model_path models/wid_384.bin \
        --config_path models/wid/bert_base_to_384_dim.json --output_model_path models/student_384.bin

writes models/student_384.bin and models/student_384_config.json (load them like any BERT:
--pretrained_model_path models/student_384.bin --config_path models/student_384_config.json).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

from tencentpretrain.errors import run_cli  # noqa: E402
from tencentpretrain.wid.cli import wid_opts  # noqa: E402
from tencentpretrain.wid.merge import merge_checkpoint  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load_model_path", required=True, help="compacted checkpoint written by pretrain.py")
    parser.add_argument("--config_path", required=True, help="the WID config it was trained with")
    parser.add_argument("--output_model_path", required=True, help="where to write the dense student")
    parser.add_argument("--output_config_path", default=None,
                        help="student config json (default: beside the model, <name>_config.json)")
    wid_opts(parser)  # the same WID flags the training run was given, if any
    args = parser.parse_args(argv)
    config_path, cfg = merge_checkpoint(args.load_model_path, args.config_path, args.output_model_path,
                                        args.output_config_path, vars(args))
    print(f"student: hidden {cfg['hidden_size']}, {cfg['heads_num']} heads, FFN {cfg['feedforward_size']}, "
          f"{cfg['layers_num']} layers -> {args.output_model_path}, config {config_path}")


if __name__ == "__main__":
    run_cli(main)
