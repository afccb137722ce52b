"""Fine-tune span-extraction question answering on SQuAD v1.1 / v2.0 JSON."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702

from tencentpretrain.errors import run_cli
from tencentpretrain.tasks.squad import squad_main

if __name__ == "__main__":
    run_cli(squad_main)
