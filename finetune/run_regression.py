"""Fine-tune a sentence-pair regression model (STS-B style scores in the label column)."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702

from tencentpretrain.errors import run_cli
from tencentpretrain.tasks.classification import regression_main

if __name__ == "__main__":
    run_cli(regression_main)
