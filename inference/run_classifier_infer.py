"""Predict labels (optionally logits and probabilities) for a TSV file with a fine-tuned classifier."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702

from tencentpretrain.errors import run_cli
from tencentpretrain.tasks.classification import classifier_infer_main

if __name__ == "__main__":
    run_cli(classifier_infer_main)
