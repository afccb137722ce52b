"""Masked-token accuracy of a model on a held-out dataset, with fixed masks (comparable across models).

    python preprocess.py --corpus_path held_out.txt --dataset_path held_out.tpd --data_processor mlm \
        --full_sentences --dynamic_masking
    python scripts/evaluate_mlm.py --load_model_path models/student.bin --config_path models/student_config.json \
        --dataset_path held_out.tpd [--seed 7] [--max_instances 500] [--output_path result.json]

Instances are read in file order and masked by the loader's generator seeded with --seed, so every model
(any size) is asked about exactly the same tokens. Prints accuracy, loss and the number of masked tokens.

Guide: docs/wid_demo.md
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402

from tencentpretrain.errors import run_cli  # noqa: E402


def main(argv=None):
    from tencentpretrain.evaluation import count_parameters, load_model, mlm_accuracy
    from tencentpretrain.utils.io import write_json
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load_model_path", required=True, help="model weights with an MLM head (target.mlm.*)")
    p.add_argument("--config_path", required=True, help="its model config json")
    p.add_argument("--dataset_path", required=True, help="held-out dataset from preprocess.py (mlm or bert)")
    p.add_argument("--seed", type=int, default=7, help="masking seed (keep it fixed to compare models)")
    p.add_argument("--batch_size", type=int, default=32, help="instances per forward")
    p.add_argument("--max_instances", type=int, default=None, help="evaluate only the first N instances")
    p.add_argument("--output_path", default=None, help="also write the result as json")
    args = p.parse_args(argv)
    model = load_model(args.config_path, args.load_model_path)
    if not hasattr(model.target, "mlm"):
        from tencentpretrain.errors import UserError
        raise UserError(f"{args.config_path}: the model has no MLM target (target: {model.cfg.target}); "
                        f"evaluate a pre-trained model with \"target\": [\"mlm\"]")
    result = mlm_accuracy(model, args.dataset_path, args.batch_size, args.seed, args.max_instances)
    result["params"] = count_parameters(model)
    print(f"MLM accuracy {result['mlm_acc']:.4f}, loss {result['mlm_loss']:.4f} over {result['predictions']} "
          f"masked tokens in {result['instances']} instances of {args.dataset_path} (seed {args.seed}); "
          f"{result['params'] / 1e6:.2f}M parameters (embeddings + encoder)")
    if args.output_path:
        write_json(args.output_path, result)


if __name__ == "__main__":
    run_cli(main)
