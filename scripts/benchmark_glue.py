"""Fine-tune checkpoints on the GLUE tasks and SQuAD v1.1 present (../shared/data), several seeds; write a results
JSON and a Markdown table. See tencentpretrain/tasks/suite_cli.py, or run with --help."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702

from tencentpretrain.errors import run_cli
from tencentpretrain.tasks.suite_cli import main

if __name__ == "__main__":
    run_cli(main)
