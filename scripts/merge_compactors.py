r"""Fold a WID-compacted checkpoint into a smaller dense BERT (weights + config json).

    python scripts/merge_compactors.py --load_model_path models/wid_384.bin \
        --config_path models/wid/bert_base_to_384_dim.json --output_model_path models/student_384.bin

writes models/student_384.bin and models/student_384_config.json (load them like any BERT:
--pretrained_model_path models/student_384.bin --config_path models/student_384_config.json).
A run started the reference code's way merges with the teacher's config and the same WID flags:
    ... --config_path models/bert/base_config.json --target_dim 192 --compactor_mask_strategy dim --w_step 500

Refused, with nothing written: a checkpoint taken before the masks reached the target widths, and one
whose masked coordinates are not dead yet (their decay factor, the product of the per-step pulls
1 - lr_c x l2_lambda since they were masked, is still >= wid.zero_below, 1e-3 by default): merging
drops them, so the student would differ from the trained model. The message says how many are alive,
the largest remaining factor and entry, and the steps still needed at the current decay (lr from the
checkpoint's .state.pt when present, else the config). --allow_live_masked merges anyway, with a warning.

Guide: docs/wid.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

from tencentpretrain import features  # noqa: E402
from tencentpretrain.errors import run_cli  # noqa: E402


def main(argv=None):
    wid = features.get("wid")  # the merge is WID's export (tencentpretrain/wid/feature.py)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load_model_path", required=True, help="compacted checkpoint written by pretrain.py")
    parser.add_argument("--config_path", required=True, help="the WID config it was trained with")
    parser.add_argument("--output_model_path", required=True, help="where to write the dense student")
    parser.add_argument("--output_config_path", default=None,
                        help="student config json (default: beside the model, <name>_config.json)")
    wid.add_export_options(parser)  # --allow_live_masked and the run's WID flags
    args = parser.parse_args(argv)
    config_path, cfg = wid.export(args.load_model_path, args.config_path, args.output_model_path,
                                  args.output_config_path, vars(args))
    print(f"student: hidden {cfg['hidden_size']}, {cfg['heads_num']} heads, FFN {cfg['feedforward_size']}, "
          f"{cfg['layers_num']} layers -> {args.output_model_path}, config {config_path}")


if __name__ == "__main__":
    run_cli(main)
