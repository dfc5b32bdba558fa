"""Data-parallel training with torchrun on CPU (gloo): 2 processes take the same optimizer steps as 1 process
with the same global batch, every rank holds the same masks, only rank 0 writes, and ranks with different
masks are refused. The stage scripts run as DVC runs them (`python pipeline/<stage>.py`), and relaunch
themselves under torchrun when params ask for 2 processes."""
import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import chosen_lr

from sparsecl.errors import DistributedSetupError


REPO = Path(__file__).resolve().parents[1]
ENV_ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def params():
    """Toy params with LoRD besides none: LoRD runs extra forward passes per step (a subnetwork, replay)."""
    p = yaml.safe_load((REPO / "tests" / "toy_params.yaml").read_text())
    main = yaml.safe_load((REPO / "params.yaml").read_text())
    p["mechanism"]["lord"] = dict(main["mechanism"]["lord"], buffer_size=20, probe_tokens=256, teacher_candidates=4)
    return p


def run_stage(ws: Path, script: str, *args: str) -> str:
    env = {**os.environ, **ENV_ONE_THREAD}
    out = subprocess.run([sys.executable, str(REPO / "pipeline" / f"{script}.py"), *args], cwd=ws, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def train_arm(root: Path, params: dict, tokens: Path, nproc: int) -> tuple[Path, str]:
    ws = root / f"nproc{nproc}"
    shutil.copytree(tokens, ws / "data" / "tokens")
    p = copy.deepcopy(params)
    p["distributed"]["nproc_per_node"] = nproc
    p["lr_search"]["tokens"] = 1024  # not pretraining's budget: both runs train it
    (ws / "params.yaml").write_text(yaml.safe_dump(p))
    chosen_lr(ws, "random", p["train"]["lr"])
    log = run_stage(ws, "init_topologies", "--topology", "random", "--seed", "0")
    log += run_stage(ws, "pretrain", "--topology", "random", "--seed", "0")
    log += run_stage(ws, "sequential", "--topology", "random", "--mechanism", "lord", "--seed", "0")
    return ws, log


def loss_curves(ws: Path) -> dict[str, list[float]]:
    """Every logged training loss (DVCLive's TSV files), by stage and phase."""
    curves = {}
    for tsv in sorted((ws / "dvclive").rglob("loss.tsv")):
        rows = tsv.read_text().splitlines()[1:]
        curves[str(tsv.relative_to(ws))] = [float(r.split("\t")[1]) for r in rows]
    return curves


@pytest.fixture(scope="module")
def runs(tmp_path_factory, params, tokens):
    root = tmp_path_factory.mktemp("ddp")
    return {n: train_arm(root, params, tokens, n) for n in (1, 2)}


def test_two_processes_follow_the_one_process_loss_curve(runs):
    one, two = loss_curves(runs[1][0]), loss_curves(runs[2][0])
    assert set(one) == set(two) and len(one) == 3  # pretraining and two LoRD phases
    for name in one:
        assert len(one[name]) == len(two[name]) > 0
        # Same batches and gradients; only the order of floating-point sums differs.
        assert one[name] == pytest.approx(two[name], rel=1e-4, abs=1e-4), name


def test_two_processes_end_with_the_same_weights(runs):
    for ckpt in ("models/pretrain/random-s0/model.pt", "models/sequential/random-lord-s0/phase2.pt"):
        a = torch.load(runs[1][0] / ckpt, weights_only=False)["model"]
        b = torch.load(runs[2][0] / ckpt, weights_only=False)["model"]
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-4, msg=f"{ckpt} {name}")
            if name.endswith("mask"):
                assert torch.equal(a[name], b[name])


def test_two_processes_count_the_flops_of_one(runs):
    """Each rank trains half of every current batch but replays whole buffer batches: the arm's training
    FLOPs are still one process's."""
    one, two = (json.loads((runs[n][0] / "metrics/mechanism/random-lord-s0.json").read_text()) for n in (1, 2))
    assert one["train_flops"] > 0 and two["train_flops"] == pytest.approx(one["train_flops"], rel=1e-12)


def test_ranks_check_their_masks_and_only_rank_0_writes(runs):
    ws, log = runs[2]
    assert "launching 2 processes: torchrun --standalone --nproc_per_node=2" in log
    assert log.count("masks: identical on 2 ranks") == 2  # pretrain and sequential, printed by rank 0 only
    assert log.count("[pretrain-random-s0] step 32/32") == 1
    written = sorted(str(f.relative_to(ws)) for f in ws.rglob("*") if f.is_file() and "data" not in f.parts)
    one = sorted(str(f.relative_to(runs[1][0])) for f in runs[1][0].rglob("*")
                 if f.is_file() and "data" not in f.parts)
    assert written == one  # the same files as one process: no rank-1 copies, no leftovers
    assert not (ws / "runs" / "resume" / "random-lord-s0").exists()


def test_ranks_with_different_masks_are_refused(tmp_path):
    script = tmp_path / "differ.py"
    script.write_text(textwrap.dedent("""
        import torch
        from sparsecl.errors import DistributedSetupError
        from sparsecl.io import tensors_sha256
        from sparsecl.train import distributed
        distributed.init(torch.device("cpu"))
        mask = torch.ones(4, 4)
        mask[0, distributed.rank()] = 0  # rank 1 drops another entry than rank 0
        try:
            distributed.check_identical("masks", tensors_sha256({"h.0.mlp.c_fc": mask}))
        except DistributedSetupError as e:
            print(f"rank {distributed.rank()}: {e}")
        distributed.barrier()
        distributed.close()
    """))
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    for r in (0, 1):
        assert f"rank {r}: masks differ between ranks: ranks [1] do not match rank 0" in out.stdout
