"""Repair DVC's own state files that a kill can leave torn, so that a plain rerun recovers.

DVC rewrites `dvc.lock` and `.dvc/tmp/rwlock` in place (not through a temporary file): a process killed
while writing one leaves it empty or cut short, and every later `dvc` command then fails ("./dvc.lock
validation failed", "Unable to read RWLock-file ... JSON structure is corrupted"). This module checks both
files with DVC's own schemas and, holding DVC's repository lock (so never under a running DVC process):

- a torn `dvc.lock` is replaced by the committed one (`git show HEAD:dvc.lock`), or removed when git has
  no valid one; `dvc repro` then skips every stage whose recorded deps, params and outputs still match and
  reruns, or restores from DVC's run-cache, the others;
- a torn `.dvc/tmp/rwlock` is removed: it only lists the stages running processes hold, and there are
  none (DVC drops the entries of dead processes from an intact file itself).

    python -m sparsecl.repair && dvc repro       # what scripts/main.sh does
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

LOCKFILE = "dvc.lock"


def _lockfile_problem(text: str) -> str | None:
    """Why `text` is not a dvc.lock DVC can read, or None."""
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA
    from ruamel.yaml import YAML, YAMLError
    from voluptuous import Invalid

    if not text.strip():
        return "empty"
    try:
        COMPILED_LOCKFILE_SCHEMA(YAML(typ="safe").load(text) or {})
    except YAMLError:
        return "not valid YAML (cut short)"
    except Invalid as e:
        return f"not in DVC's format ({str(e)[:80]})"
    return None


def _rwlock_problem(text: str) -> str | None:
    from dvc.rwlock import SCHEMA
    from voluptuous import Invalid

    if not text.strip():
        return "empty"
    try:
        SCHEMA(json.loads(text))
    except json.JSONDecodeError:
        return "not valid JSON (cut short)"
    except Invalid:
        return "not in DVC's format"
    return None


def _committed_lockfile(root: Path) -> str | None:
    """HEAD's dvc.lock if git has one DVC can read."""
    try:
        # ./ : relative to the DVC root, which may be a subfolder of the git repository
        text = subprocess.run(["git", "show", f"HEAD:./{LOCKFILE}"], cwd=root, capture_output=True,
                              check=True).stdout.decode("utf-8")
    except (OSError, subprocess.CalledProcessError, UnicodeDecodeError):  # no git, no commit, not committed
        return None
    return text if _lockfile_problem(text) is None else None


def _repair_lockfile(root: Path) -> str | None:
    from sparsecl.io import write_text

    path = root / LOCKFILE
    try:
        problem = _lockfile_problem(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:  # cut inside a character
        problem = "not UTF-8 (cut short)"
    if problem is None:
        return None
    committed = _committed_lockfile(root)
    if committed is not None:
        write_text(path, committed)
        action = ("restored the committed one (git show HEAD:dvc.lock); dvc repro reruns, or restores from "
                  "DVC's run-cache, the stages that changed since that commit")
    else:
        path.unlink()
        action = ("removed it (git has no valid one); dvc repro reruns, or restores from DVC's run-cache, "
                  "every stage")
    return f"repair: {LOCKFILE} was {problem}, torn by a kill while DVC rewrote it: {action}"


def _repair_rwlock(tmp_dir: Path, hardlink: bool) -> str | None:
    from dvc.lock import make_lock

    path = tmp_dir / "rwlock"
    # DVC's own guard of this file: never read it while a DVC process is halfway through writing it.
    with make_lock(str(tmp_dir / "rwlock.lock"), tmp_dir=str(tmp_dir), hardlink_lock=hardlink):
        try:
            problem = _rwlock_problem(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except UnicodeDecodeError:
            problem = "not UTF-8 (cut short)"
        if problem is None:
            return None
        path.unlink()
    return (f"repair: .dvc/tmp/rwlock was {problem}, torn by a kill while DVC rewrote it: removed it "
            f"(no DVC process is running, so it held no live lock)")


def repair(root: str | Path = ".") -> list[str]:
    """Repair what a kill left torn in the DVC repository `root` is in; return one line per repair done.
    Raises dvc.lock.LockError if another DVC process holds the repository."""
    from dvc.repo import Repo

    repo = Repo(str(root), uninitialized=True)  # finds the repository's root above `root`
    try:
        if repo.tmp_dir is None:  # not a DVC repository (yet): nothing of DVC's to repair
            return []
        with repo.lock:
            done = [_repair_lockfile(Path(repo.root_dir)),
                    _repair_rwlock(Path(repo.tmp_dir), repo.config["core"].get("hardlink_lock", False))]
    finally:
        repo.close()
    return [line for line in done if line]


def main(argv: list[str] | None = None) -> int:
    from dvc.lock import LockError

    parser = argparse.ArgumentParser(prog="python -m sparsecl.repair", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet", action="store_true", help="print nothing when there is nothing to repair")
    args = parser.parse_args(argv)
    try:
        lines = repair(".")
    except LockError:
        print("error: another DVC process holds this repository (.dvc/tmp/lock); nothing repaired: let it "
              "finish or stop it, then run this again", file=sys.stderr)
        return 1
    for line in lines:
        print(line, flush=True)
    if not lines and not args.quiet:
        print("repair: dvc.lock and .dvc/tmp/rwlock are intact; nothing to repair")
    return 0


if __name__ == "__main__":
    sys.exit(main())
