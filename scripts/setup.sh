#!/usr/bin/env bash
# Creates .venv with snnsec installed. torch is installed first and pinned (constraints.txt): an
# unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
echo "snnsec installed in .venv: run .venv/bin/snnsec attack"
