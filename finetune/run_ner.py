"""Fine-tune a BIO tagger for NER (TencentPretrain TSV: text_a, label; space-separated tokens and tags)."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702

from tencentpretrain.errors import run_cli
from tencentpretrain.tasks.ner import ner_main

if __name__ == "__main__":
    run_cli(ner_main)
