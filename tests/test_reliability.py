"""Reliability of the training stages on toy data: a stage killed by a real SIGKILL resumes
to the uninterrupted result, the same seed gives byte-identical files, a diverging run stops cleanly, and a
corrupted input is refused. The stage scripts themselves run, in this process where no signal is needed."""
import copy
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from sparsecl.io import tensors_sha256
from tests.conftest import chosen_lr

REPO = Path(__file__).resolve().parents[1]
SEQ = ("--topology", "random", "--mechanism", "none", "--seed")


# One thread in this process and in the stage processes alike: CPU results depend on the thread count (how
# reductions are split), and a small CI machine's cores are not oversubscribed.
THREADS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def params():
    """Toy params with phases long enough to kill one mid-phase: 30 pretraining steps and 25 per later
    phase, an in-phase checkpoint every 5 steps."""
    p = yaml.safe_load((REPO / "tests" / "toy_params.yaml").read_text())
    step_tokens = p["train"]["batch_size"] * p["train"]["grad_accum"] * p["model"]["block_size"]
    p["train"].update(log_every=5, ckpt_every=5)
    p["pretrain"]["tokens"], p["phase"]["tokens"] = 30 * step_tokens, 25 * step_tokens
    p["lr_search"]["tokens"] = step_tokens  # not pretraining's budget: pretrain trains (chosen_lr below)
    return p


def workspace(path: Path, params: dict, tokens: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tokens, path / "data" / "tokens")
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    chosen_lr(path, "random", params["train"]["lr"])
    return path


def stage(script: str, *args, monkeypatch) -> None:
    """Run a stage script as `python pipeline/<script>.py args` would, in this process (cwd: the workspace)."""
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    runpy.run_path(str(REPO / "pipeline" / f"{script}.py"), run_name="__main__")


def run_arm(ws: Path, seed: int, monkeypatch) -> Path:
    monkeypatch.chdir(ws)
    stage("init_topologies", "--topology", "random", "--seed", seed, monkeypatch=monkeypatch)
    stage("pretrain", "--topology", "random", "--seed", seed, monkeypatch=monkeypatch)
    stage("sequential", *SEQ, seed, monkeypatch=monkeypatch)
    stage("evaluate", *SEQ, seed, monkeypatch=monkeypatch)
    return ws


def outputs(ws: Path) -> dict[str, bytes]:
    """Every file the training and evaluation stages write, by path, but the wall-clock ones (timing/,
    inference/); metrics/topology/ is init_topologies' own."""
    files = [f for d in ("metrics", "models") for f in sorted((ws / d).rglob("*")) if f.is_file()]
    return {str(f.relative_to(ws)): f.read_bytes() for f in files if "topology" not in f.relative_to(ws).parts}


def step_logs(ws: Path) -> dict[str, str]:
    """DVCLive's step logs of loss and lr (step, value); tokens/s is measured, so it differs."""
    return {str(f.relative_to(ws)): f.read_text() for f in sorted((ws / "dvclive").rglob("*.tsv"))
            if f.stem in ("loss", "lr")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, params, tokens):
    """One uninterrupted run of the seed-0 arm, every stage script from init_topologies to evaluate."""
    with pytest.MonkeyPatch.context() as mp:
        return run_arm(workspace(tmp_path_factory.mktemp("reference"), params, tokens), 0, mp)


def test_same_seed_gives_identical_files_and_another_seed_different(reference, params, tokens, tmp_path,
                                                                   monkeypatch):
    again = run_arm(workspace(tmp_path / "again", params, tokens), 0, monkeypatch)
    other = run_arm(workspace(tmp_path / "other", params, tokens), 1, monkeypatch)
    ref = outputs(reference)
    assert "metrics/eval/random-none-s0.json" in ref and "models/sequential/random-none-s0/phase2.pt" in ref
    assert outputs(again) == ref
    assert step_logs(again) == step_logs(reference)
    eval_0 = ref["metrics/eval/random-none-s0.json"]
    eval_1 = outputs(other)["metrics/eval/random-none-s1.json"]
    assert eval_0 != eval_1


def start(ws: Path, script: str, *args) -> tuple[subprocess.Popen, Path]:
    log = ws / f"{script}.log"
    with open(log, "a") as f:
        proc = subprocess.Popen([sys.executable, str(REPO / "pipeline" / f"{script}.py"), *map(str, args)], cwd=ws,
                                stdout=f, stderr=subprocess.STDOUT, env=THREADS_ENV)
    return proc, log


def kill_when(proc: subprocess.Popen, log: Path, ready, timeout: float = 300) -> None:
    """SIGKILL the process as soon as `ready()` holds (polled every few milliseconds)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the stage ended before it could be killed:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "timed out waiting for an in-phase checkpoint"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def newer(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_mtime_ns > b.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def rerun(ws: Path, script: str, *args) -> str:
    proc, log = start(ws, script, *args)
    assert proc.wait() == 0, log.read_text()[-3000:]
    return log.read_text()


def test_killed_stages_resume_to_the_uninterrupted_result(reference, params, tokens, tmp_path):
    ws = workspace(tmp_path / "killed", params, tokens)
    shutil.copytree(reference / "data" / "masks", ws / "data" / "masks")
    pre, seq = ws / "runs" / "resume" / "pretrain-random-s0", ws / "runs" / "resume" / "random-none-s0"

    proc, log = start(ws, "pretrain", "--topology", "random", "--seed", 0)
    kill_when(proc, log, lambda: (pre / "inphase.pt").exists())
    assert not (ws / "models").exists()
    assert "resuming at step" in rerun(ws, "pretrain", "--topology", "random", "--seed", 0)

    # Killed in phase 2, after phase 1 finished and phase 2 saved an in-phase checkpoint.
    proc, log = start(ws, "sequential", *SEQ, 0)
    kill_when(proc, log, lambda: newer(seq / "inphase.pt", seq / "phase1.pt"))
    assert not (ws / "models" / "sequential").exists()
    out = rerun(ws, "sequential", *SEQ, 0)
    assert "resuming after finished phase 1" in out and "resuming at step" in out
    rerun(ws, "evaluate", *SEQ, 0)

    assert outputs(ws) == outputs(reference)
    assert step_logs(ws) == step_logs(reference)
    assert not any((ws / "runs" / "resume").iterdir()), "finished work is published and its resume folder removed"


def test_divergence_stops_the_arm_and_keeps_the_last_good_checkpoint(params, tokens, tmp_path, monkeypatch,
                                                                     capsys):
    """An absurd learning rate (100, warming up over the phase) turns the weights non-finite after an
    in-phase checkpoint: the stage exits 1 naming arm, phase and step, and publishes nothing."""
    p = copy.deepcopy(params)
    p["train"].update(lr=100.0, warmup_steps=1000)
    ws = workspace(tmp_path / "nan", p, tokens)
    monkeypatch.chdir(ws)
    stage("init_topologies", "--topology", "random", "--seed", 0, monkeypatch=monkeypatch)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        stage("pretrain", "--topology", "random", "--seed", 0, monkeypatch=monkeypatch)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: pretrain-random-s0: non-finite training state at phase 0, step "), err
    failed_at = int(err.split(" step ")[1].split("/")[0])
    state = torch.load(ws / "runs" / "resume" / "pretrain-random-s0" / "inphase.pt", weights_only=False)
    assert 0 < state["step"] < failed_at and f"(step {state['step']})" in err
    assert all(t.isfinite().all() for t in state["model"].values())
    assert tensors_sha256(state["model"]) == state["model_sha256"]
    assert not (ws / "models").exists() and not (ws / "metrics" / "eval").exists()


@pytest.mark.parametrize("corrupt", ["mask byte", "truncated tokens"])
def test_stage_refuses_a_corrupted_input(reference, params, tokens, tmp_path, monkeypatch, capsys, corrupt):
    ws = workspace(tmp_path / "corrupt", params, tokens)
    shutil.copytree(reference / "data" / "masks", ws / "data" / "masks")
    if corrupt == "mask byte":
        path = ws / "data" / "masks" / "random-s0.pt"
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x01  # inside the mask tensors' data
    else:
        path = ws / "data" / "tokens" / f"{params['data']['order'][0]}.train.bin"
        raw = path.read_bytes()[:-2]  # the last token lost
    path.write_bytes(bytes(raw))
    monkeypatch.chdir(ws)
    with pytest.raises(SystemExit) as e:
        stage("pretrain", "--topology", "random", "--seed", 0, monkeypatch=monkeypatch)
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith(f"error: data/") and path.name in err and "corrupted" in err
    assert not (ws / "models").exists()


def test_a_corrupted_last_phase_is_refused_before_the_first_phase_trains(reference, params, tmp_path, monkeypatch,
                                                                       capsys):
    """One byte flipped in the last phase's token array: the sequential stage refuses before training phase 1,
    and the step logs and models of the earlier run stay as they were."""
    ws = tmp_path / "late"
    shutil.copytree(reference, ws)
    last = ws / "data" / "tokens" / f"{params['data']['order'][-1]}.train.bin"
    raw = bytearray(last.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    last.write_bytes(bytes(raw))
    logs = {f: f.read_bytes() for f in sorted((ws / "dvclive").rglob("*")) if f.is_file()}
    before = outputs(ws)
    assert any("sequential" in str(f) for f in logs)
    monkeypatch.chdir(ws)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        stage("sequential", *SEQ, 0, monkeypatch=monkeypatch)
    out, err = capsys.readouterr()
    assert e.value.code == 1 and err.startswith(f"error: data/tokens/{last.name}: missing, or its content hash")
    assert "phase 1" not in out, out
    assert {f: f.read_bytes() for f in sorted((ws / "dvclive").rglob("*")) if f.is_file()} == logs
    assert outputs(ws) == before and not (ws / "runs" / "resume" / "random-none-s0").exists()


def test_an_in_phase_checkpoint_of_another_phase_is_not_resumed(tmp_path, toy_params, capsys):
    """A run killed between saving a finished phase and deleting its in-phase checkpoint leaves that file
    behind; the next phase must start fresh, not from it."""
    from sparsecl.mechanisms import make as make_mechanism
    from sparsecl.model import GPT, GPTConfig
    from sparsecl.train.loop import train_phase

    tokens = torch.randint(0, 64, (4000,)).numpy().astype("uint16")
    toy_params["train"]["ckpt_every"] = 2

    def phase(k, resume_file):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=64, **toy_params["model"]))
        train_phase(model, tokens, 5 * 256, toy_params["train"], seed=0, phase=k, mechanism=make_mechanism("none", {}),
                    device=torch.device("cpu"), resume_file=resume_file, label="t")
        return model.state_dict()

    phase(1, tmp_path / "left.pt")  # leaves its step-4 checkpoint of phase 1
    resumed, fresh = phase(2, tmp_path / "left.pt"), phase(2, tmp_path / "fresh.pt")
    assert "ignoring" in capsys.readouterr().out
    assert all(torch.equal(resumed[k], fresh[k]) for k in fresh)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    """Every atomic write (json, text, torch archives, token arrays) gets the mode a plain open() gives under
    the umask, not mkstemp's 0600: other users of a shared machine can read the results."""
    code = ("import numpy as np; from sparsecl import io\n"
            "io.write_json('m/summary.json', {'a': 1}); io.write_text('m/report.md', 'x'); io.torch_save({}, 'm/x.pt')\n"
            "with io.atomic_path('m/t.bin') as tmp: np.arange(3).tofile(tmp)\n")
    subprocess.run(["sh", "-c", f"umask {umask:03o} && exec {sys.executable} -c \"$0\"", code], cwd=tmp_path,
                   check=True, env=THREADS_ENV)
    modes = {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / "m").iterdir()}
    assert modes == {name: mode for name in ("summary.json", "report.md", "x.pt", "t.bin")}, modes


def test_a_toy_run_writes_its_metrics_with_the_umask_mode(reference):
    umask = os.umask(0o022)
    os.umask(umask)
    assert (reference / "metrics" / "eval" / "random-none-s0.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_full_disk_names_the_file_being_written(tmp_path, toy_params, monkeypatch, capsys):
    """ENOSPC from the write itself (which names no file): the error names the target, no temporary file is
    left, and a stage prints it as one line (exit 1) instead of a traceback."""
    import errno

    from sparsecl import stage as stage_mod
    from sparsecl.io import write_json

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as e:
        write_json(tmp_path / "metrics" / "summary.json", {"a": 1})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "metrics" / "summary.json")
    assert list((tmp_path / "metrics").iterdir()) == []

    (tmp_path / "params.yaml").write_bytes(yaml.safe_dump(toy_params).encode())  # write_text is the full disk
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stage"])
    with pytest.raises(SystemExit) as e:
        stage_mod.run(lambda params, args: write_json("metrics/summary.json", {"a": 1}))
    assert e.value.code == 1
    assert capsys.readouterr().err == ("error: [Errno 28] No space left on device: 'metrics/summary.json'; free "
                                       "some space and rerun\n")
