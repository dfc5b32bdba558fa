#!/usr/bin/env bash
# One command: install everything into .venv and run the main job (`dvc repro` on params.yaml).
# Extra arguments go to `dvc repro` (e.g. `bash scripts/main.sh --force`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
pip install --quiet --disable-pip-version-check -e .
# DVC needs a git repository with at least one commit (DVCLive reads the baseline revision).
git_commit() { git -c user.name=sparsecl -c user.email=sparsecl@localhost commit --quiet "$@"; }
[ -d .git ] || git init --quiet
[ -d .dvc ] || { dvc init --quiet && git add .dvc .dvcignore; }
git rev-parse --verify HEAD >/dev/null 2>&1 || { git add -A && git_commit -m "sparsecl: initial import"; }
# A kill while DVC rewrites dvc.lock or .dvc/tmp/rwlock leaves it torn: repair that first (sparsecl/repair.py).
python -m sparsecl.repair --quiet
time dvc repro "$@"
