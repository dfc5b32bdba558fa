"""Fair comparisons: the lr chosen on domain A alone, the per-matrix lr, plasticity, intransigence, forward
transfer against scratch, learning speed and per-visit forgetting against values worked out by hand."""
import json
import shutil

import numpy as np
import pytest
import torch

from sparsecl.errors import ParamsError
from sparsecl.data.tokens import build
from sparsecl.io import read_json, sha256_file
from sparsecl.metrics.continual import (final_summary, first_phases, forward_transfer_vs_scratch, intransigence,
                                        per_visit, plasticity_per_domain, trained_columns)
from sparsecl.model import GPT, GPTConfig
from sparsecl.report.analyze import Arm, arm_summary
from sparsecl.topology.store import make_masks
from sparsecl.train.loop import make_optimizer
from sparsecl.train.lr_select import select_lr
from sparsecl.train.run import lr_grid_point

# After phase j (rows) on domains a, b, c (columns): a is pretrained, b trained at 1, c at 2.
L = np.array([[2.0, 6.0, 7.0],
              [3.0, 2.5, 6.5],
              [3.5, 3.1, 2.2]])


def test_plasticity_intransigence_and_fwt_vs_scratch_by_hand():
    assert plasticity_per_domain(L).tolist() == [2.0, 2.5, 2.2]  # the diagonal: L[t(i), i]
    # joint reference 1.8, 2.0, 2.1: (0.2 + 0.5 + 0.1) / 3
    assert intransigence(L, [1.8, 2.0, 2.1]) == pytest.approx(0.8 / 3)
    # scratch after one phase: b 3.0, c 2.0 -> (3.0 - 2.5 + 2.0 - 2.2) / 2
    assert forward_transfer_vs_scratch(L, [3.0, 2.0]) == pytest.approx(0.15)
    s = final_summary(L, [8.0, 8.0, 8.0])
    assert s["plasticity"] == pytest.approx(6.7 / 3)
    # no repeats: per visit equals Chaudhry's forgetting (a: 3.5 - 2.0, b: 3.1 - 2.5) and BWT
    assert s["forgetting_per_visit"] == pytest.approx(s["forgetting"]) == pytest.approx((1.5 + 0.6) / 2)
    assert s["bwt_per_visit"] == pytest.approx(s["bwt"]) and s["core_forgetting_per_visit"] == pytest.approx(1.5)


def test_per_visit_forgetting_on_a_cyclic_order():
    """Each visit lowers code's loss by 0.2 and each later phase raises it by 0.15: forgetting since its first
    training is small (relearning hides it), per visit it is 4 x 0.15 = 0.6 nats per cycle."""
    order = ["code", "math", "medical", "legal", "dialogue"] * 3
    domains, first = first_phases(order)
    M = np.full((len(order), len(domains)), 5.0)
    v = 4.0
    for j, d in enumerate(order):
        v += -0.2 if d == "code" else 0.15
        M[j, 0] = v
        M[j, 1:] = 5.0 - 0.01 * j  # the other domains only improve: nothing to forget there
    pv = per_visit(M, trained_columns(order))
    assert pv["core_forgetting_per_visit"] == pytest.approx(0.6)
    # From its first training code's loss went 3.8 -> 5.2: the first-visit view mixes the drift of the cycles.
    s = final_summary(M, np.full(5, 8.0), first, trained_columns(order))
    assert s["core_forgetting"] == pytest.approx(1.4) and s["core_forgetting_per_visit"] == pytest.approx(0.6)
    # 14 visits (the last phase's excluded): code's 3 end 0.6 above their start, the other 11 end 0.01 below
    # the phase before (their best so far)
    assert pv["forgetting_per_visit"] == pytest.approx((3 * 0.6 - 11 * 0.01) / 14)
    with pytest.raises(ValueError, match="trained"):
        final_summary(M, np.full(5, 8.0), first)


def test_learning_speed_and_the_reference_gaps_in_the_arm_summary():
    first = np.arange(3)
    arm = Arm("random", "none", 0, L, np.full(3, 8.0), first, trained_columns(["a", "b", "c"]),
              speed=np.array([4.0, 3.0]))
    refs = {"joint": {"a": 1.8, "b": 2.0, "c": 2.1}, "scratch": {"b": 3.0, "c": 2.0}}
    s = arm_summary(arm, refs, ["a", "b", "c"])
    assert s["learning_speed"] == pytest.approx(3.5)
    assert s["joint_avg_loss"] == pytest.approx(5.9 / 3)
    assert s["joint_gap"] == pytest.approx((3.5 + 3.1 + 2.2) / 3 - 5.9 / 3)
    assert s["intransigence"] == pytest.approx(0.8 / 3) and s["fwt_vs_scratch"] == pytest.approx(0.15)


def test_select_lr_takes_the_lowest_loss_and_flags_the_grid_edge():
    points = [{"factor": 0.5, "lr": 1e-3, "diverged": 0, "val_loss": 4.2},
              {"factor": 1.0, "lr": 2e-3, "diverged": 0, "val_loss": 4.1},
              {"factor": 2.0, "lr": 4e-3, "diverged": 1}]
    chosen = select_lr(points)
    assert chosen["lr"] == 2e-3 and chosen["at_grid_edge"] == 0 and chosen["grid_points"] == 3
    assert select_lr(points[:2])["at_grid_edge"] == 1
    with pytest.raises(ParamsError, match="lr_search.factors: every lr of the grid diverged"):
        select_lr(points[2:])


def test_masked_matrices_take_the_same_relative_step_whatever_their_density(toy_params):
    """lr of a masked matrix = lr x matrix_lr_ratio x init_gain; of everything else, lr."""
    cfg = GPTConfig(vocab_size=300, **toy_params["model"])
    model = GPT(cfg, masks=make_masks(toy_params, "random", 0))
    opt = make_optimizer(model, toy_params["train"], torch.device("cpu"))
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    ratio = toy_params["train"]["matrix_lr_ratio"]
    for layer in model.masked_layers().values():
        assert layer.init_gain == pytest.approx(1 / np.sqrt(0.25), rel=0.05)
        assert scale[id(layer.weight)] == pytest.approx(ratio * layer.init_gain)
    assert scale[id(model.lm_head.weight)] == 1.0
    dense = make_optimizer(GPT(cfg), toy_params["train"], torch.device("cpu"))
    assert sorted({g["lr_scale"] for g in dense.param_groups}) == [ratio, 1.0]


@pytest.fixture(scope="module")
def params():
    from tests.conftest import TOY_PARAMS
    return {**TOY_PARAMS, "lr_search": {**TOY_PARAMS["lr_search"], "tokens": 512}}


def _replace_domain(folder, domain, rng):
    """Other tokens for one domain (both splits), the manifest updated to match."""
    manifest = read_json(folder / "manifest.json")
    for split in ("train", "val"):
        path = folder / f"{domain}.{split}.bin"
        arr = np.fromfile(path, dtype=manifest["dtype"])
        rng.integers(0, manifest["vocab_size"], size=arr.size).astype(arr.dtype).tofile(path)
        manifest["domains"][domain][split]["sha256"] = sha256_file(path)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_lr_grid_point_reads_domain_a_only(tokens, tmp_path, params, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its resume folder
    other = tmp_path / "other_tokens"
    shutil.copytree(tokens, other)
    _replace_domain(other, params["data"]["order"][-1], np.random.default_rng(1))
    a = lr_grid_point(params, "random", 1.0, str(tokens), "a")
    b = lr_grid_point(params, "random", 1.0, str(other), "b")
    assert a == b and a["diverged"] == 0 and np.isfinite(a["val_loss"])
    for name in ("model.pt", "steplog.jsonl"):  # no wall-clock figure in what the point publishes
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    _replace_domain(other, params["data"]["order"][0], np.random.default_rng(2))  # domain A itself: it moves
    assert lr_grid_point(params, "random", 1.0, str(other), "c")["val_loss"] != a["val_loss"]
