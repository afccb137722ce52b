"""Predict scores for a TSV file with a model from finetune/run_regression.py (one score per line)."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702

from tencentpretrain.errors import run_cli
from tencentpretrain.tasks.classification import regression_infer_main

if __name__ == "__main__":
    run_cli(regression_infer_main)
