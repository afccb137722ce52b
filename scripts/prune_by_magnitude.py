"""Prune a BERT once by weight magnitude to a smaller dense shape (the WID demo's baseline).

    python scripts/prune_by_magnitude.py --load_model_path models/teacher.bin \
        --config_path models/teacher_config.json --output_model_path models/pruned_192.bin \
        --target_dim 192 [--target_feedforward_size 768] [--strategy dim|head]

writes models/pruned_192.bin and models/pruned_192_config.json. Tied dimensions are pruned together (the
residual stream everywhere, each layer's attention width in Q/K/V/output, each FFN width), keeping the
coordinates with the largest weight norms: WID's mask groups with their masks set once, then WID's merge;
see tencentpretrain/pruning.py.

Guide: docs/wid_demo.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

from tencentpretrain.errors import run_cli  # noqa: E402


def main(argv=None):
    from tencentpretrain.pruning import prune_checkpoint
    from tencentpretrain.wid.strategies import strategy_names
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load_model_path", required=True, help="the teacher's weights")
    p.add_argument("--config_path", required=True, help="the teacher's model config")
    p.add_argument("--output_model_path", required=True, help="the pruned model's weights")
    p.add_argument("--output_config_path", default=None, help="default: <output stem>_config.json")
    p.add_argument("--target_dim", type=int, required=True, help="hidden size of the pruned model")
    p.add_argument("--target_feedforward_size", type=int, default=None, help="default: scaled with --target_dim")
    p.add_argument("--strategy", choices=strategy_names(), default="dim",
                   help="a WID mask strategy (tencentpretrain/wid/strategies). dim: keep every head, each "
                        "narrower; head: keep the strongest whole heads")
    args = p.parse_args(argv)
    result, config_path = prune_checkpoint(args.load_model_path, args.config_path, args.output_model_path,
                                           args.target_dim, args.target_feedforward_size, args.strategy,
                                           args.output_config_path)
    c = result.config
    print(f"pruned: hidden {c['hidden_size']}, {c['heads_num']} heads, FFN {c['feedforward_size']}, "
          f"{c['layers_num']} layers -> {args.output_model_path}, config {config_path}")
    if result.dropped_keys:
        print(f"left out (not pruned, MLM-only student): {', '.join(result.dropped_keys)}")


if __name__ == "__main__":
    run_cli(main)
