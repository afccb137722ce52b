"""Print fine-tuning examples/s for bert-mini and bert-small at sequence length 128 (and, with
--pretrained_model_path, the sentiment accuracy that model reaches)."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702

from tencentpretrain.errors import run_cli
from tencentpretrain.tasks.benchmark import main

if __name__ == "__main__":
    run_cli(main)
