"""`python -m sparsecl.repair` (run by scripts/main.sh before `dvc repro`) on a toy git + DVC repository with
one trivial stage: the torn dvc.lock and .dvc/tmp/rwlock that a kill during DVC's in-place rewrite leaves."""
import subprocess
import sys

import pytest

STAGE = """stages:
  upper:
    cmd: python -c "import pathlib; pathlib.Path('out.txt').write_text(pathlib.Path('in.txt').read_text().upper())"
    deps: [in.txt]
    outs: [out.txt]
"""


def sh(cwd, *cmd, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert not check or proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def dvc(cwd, *args, check=True):
    return sh(cwd, sys.executable, "-m", "dvc", *args, check=check)


def repair(cwd, check=True):
    return sh(cwd, sys.executable, "-m", "sparsecl.repair", check=check)


def commit(cwd):
    sh(cwd, "git", "add", "-A")
    sh(cwd, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run")


@pytest.fixture
def repo(tmp_path):
    sh(tmp_path, "git", "init", "-q")
    dvc(tmp_path, "init", "-q")
    (tmp_path / "dvc.yaml").write_text(STAGE)
    (tmp_path / "in.txt").write_text("hello\n")
    dvc(tmp_path, "repro")
    return tmp_path


def up_to_date(repo) -> bool:
    return "Data and pipelines are up to date" in dvc(repo, "status").stdout


@pytest.mark.parametrize("torn", ["empty", "cut short"])
def test_a_torn_lockfile_is_restored_from_git_and_nothing_reruns(repo, torn):
    commit(repo)
    lock = repo / "dvc.lock"
    good = lock.read_text()
    lock.write_text("" if torn == "empty" else good[: good.index("hash:") + 2])  # stopped inside a key
    assert "dvc.lock" in dvc(repo, "status", check=False).stderr  # validation failed / is corrupted
    out = repair(repo).stdout
    assert out.startswith("repair: dvc.lock was ") and "restored the committed one" in out and out.count("\n") == 1
    assert lock.read_text() == good and up_to_date(repo)
    assert "Stage 'upper' didn't change" in dvc(repo, "repro").stdout
    assert (repo / "out.txt").read_text() == "HELLO\n"


def test_a_torn_lockfile_git_does_not_have_is_removed_and_the_stage_restored_from_the_run_cache(repo):
    (repo / "dvc.lock").write_text("")  # never committed
    out = repair(repo).stdout
    assert "dvc.lock was empty" in out and "removed it (git has no valid one)" in out
    assert not (repo / "dvc.lock").exists()
    log = dvc(repo, "repro").stdout
    assert "Stage 'upper' is cached - skipping run, checking out outputs" in log, log
    assert (repo / "out.txt").read_text() == "HELLO\n" and up_to_date(repo)


def test_a_torn_rwlock_is_removed(repo):
    rwlock = repo / ".dvc" / "tmp" / "rwlock"
    rwlock.write_text("")
    assert "Unable to read RWLock-file" in dvc(repo, "repro", check=False).stderr
    out = repair(repo).stdout
    assert out == ("repair: .dvc/tmp/rwlock was empty, torn by a kill while DVC rewrote it: removed it "
                   "(no DVC process is running, so it held no live lock)\n")
    assert up_to_date(repo) and "didn't change" in dvc(repo, "repro").stdout


def test_intact_files_are_left_alone_and_a_running_dvc_is_never_touched(repo):
    lock = repo / "dvc.lock"
    before = lock.read_text()
    assert repair(repo).stdout == "repair: dvc.lock and .dvc/tmp/rwlock are intact; nothing to repair\n"
    assert lock.read_text() == before
    lock.write_text("")
    from dvc.lock import make_lock

    with make_lock(str(repo / ".dvc" / "tmp" / "lock")):  # what a running `dvc repro` holds
        proc = repair(repo, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("error: another DVC process holds this repository")
    assert lock.read_text() == ""
