"""Convert this toolkit's BERT to a Hugging Face folder (config.json + weights) or weights file."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702

from tencentpretrain.convert.hf_files import export_main
from tencentpretrain.errors import run_cli

if __name__ == "__main__":
    run_cli(export_main)
