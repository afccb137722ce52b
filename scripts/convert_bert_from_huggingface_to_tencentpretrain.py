"""Convert a Hugging Face BERT (folder or .bin/.safetensors) to this toolkit's keys and config."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702

from tencentpretrain.convert.hf_files import import_main
from tencentpretrain.errors import run_cli

if __name__ == "__main__":
    run_cli(import_main)
