"""Fine-tune a multi-label classifier (TencentPretrain TSV: label = comma-separated ids, text_a[, text_b])."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702

from tencentpretrain.errors import run_cli
from tencentpretrain.tasks.multi_label import multi_label_main

if __name__ == "__main__":
    run_cli(multi_label_main)
