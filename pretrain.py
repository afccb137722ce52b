"""Pre-train a model on a dataset made by preprocess.py (TencentPretrain's flag names).

    python pretrain.py --dataset_path dataset.tpd --config_path models/bert/base_config.json \
        --output_model_path models/output_model.bin --total_steps 10000 --batch_size 32
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tencentpretrain.errors import run_cli  # noqa: E402
from tencentpretrain.training.pretrain import main  # noqa: E402

if __name__ == "__main__":
    run_cli(main)
