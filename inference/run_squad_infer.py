"""Answer SQuAD-format questions with a fine-tuned span model; writes the official predictions JSON."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702

from tencentpretrain.errors import run_cli
from tencentpretrain.tasks.squad import squad_infer_main

if __name__ == "__main__":
    run_cli(squad_infer_main)
