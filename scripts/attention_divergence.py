"""Does each student attend like its teacher? Per student layer, the mean Jensen-Shannon divergence between
its attention distributions and the teacher's on held-out text, as a JSON, a table and a heat-map. See
tencentpretrain/analysis/attention_cli.py, or run with --help."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702

from tencentpretrain.errors import run_cli
from tencentpretrain.analysis.attention_cli import main

if __name__ == "__main__":
    run_cli(main)
