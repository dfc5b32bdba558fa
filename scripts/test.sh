#!/usr/bin/env bash
# One command: install everything (with the test extra) into .venv and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
pip install --quiet --disable-pip-version-check -e ".[test]"
python -m pytest -q "$@"
