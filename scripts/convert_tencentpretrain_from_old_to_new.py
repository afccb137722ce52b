"""Rename an old UER-py / WID-reference checkpoint's keys to this toolkit's (TencentPretrain) names."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401,E702

from tencentpretrain.convert.uer_old import old_to_new_main
from tencentpretrain.errors import run_cli

if __name__ == "__main__":
    run_cli(old_to_new_main)
