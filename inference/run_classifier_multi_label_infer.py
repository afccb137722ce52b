"""Predict label sets (comma-separated ids; optionally logits and probabilities) with a multi-label model."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702

from tencentpretrain.errors import run_cli
from tencentpretrain.tasks.multi_label import multi_label_infer_main

if __name__ == "__main__":
    run_cli(multi_label_infer_main)
