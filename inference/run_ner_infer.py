"""Tag each sentence of a TSV file (text_a: space-separated tokens) with a fine-tuned NER model."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702

from tencentpretrain.errors import run_cli
from tencentpretrain.tasks.ner import ner_infer_main

if __name__ == "__main__":
    run_cli(ner_infer_main)
