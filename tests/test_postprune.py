"""postprune: its FLOPs are the weights it multiplies, counted by hand from the shapes, phase by phase; every
checkpoint of its loss matrix (the pruned pretrained model included) has density rho; the unpruned
pretrained model is scored beside it; a topology already at rho is refused, naming the key."""
import copy
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from sparsecl.errors import ParamsError
from sparsecl.io import read_json
from sparsecl.mechanisms import make
from sparsecl.model import GPT, GPTConfig
from sparsecl.model.checkpoint import load_checkpoint
from sparsecl.params import validate
from sparsecl.topology.store import load_masks, make_masks
from sparsecl.train.loop import train_phase
from test_mechanisms import domains
from tests.conftest import TOY_PARAMS, chosen_lr

REPO = Path(__file__).resolve().parents[1]
VOCAB = 64
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def streams(n=3, length=3000):
    return domains(n, length, vocab=50)


def kept(n: int, fraction: float) -> int:
    return round(fraction * n)


def forward_by_hand(m: dict, vocab: int, fraction: float) -> float:
    """Forward FLOPs per token of the model keeping `fraction` of every logical matrix (q, k, v, attention
    output, fc, proj), from its shapes: 2 per kept weight, the tied head whole, attention scores and values."""
    C, L, T = m["n_embd"], m["n_layer"], m["block_size"]
    weights = L * (3 * kept(C * C, fraction) + kept(C * C, fraction) + 2 * kept(4 * C * C, fraction))
    return 2 * (weights + vocab * C) + 4 * C * T * L


@pytest.mark.parametrize("topology", ["dense", "random"])
def test_counted_flops_are_the_multiplied_weights_phase_by_phase(topology, toy_params, tmp_path):
    """Dense part of a phase: every weight the topology keeps (phase 2 starts pruned, and still trains them
    all); fine-tune: the rho kept ones. Uniform allocation keeps round(density * n) per logical matrix."""
    p = toy_params
    settings = p["mechanism"]["postprune"]
    rho, ff = settings["rho"], settings["finetune_fraction"]
    topology_fraction = 1.0 if topology == "dense" else p["density"]
    assert rho < topology_fraction
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, **p["model"]), masks=make_masks(p, topology, 0))
    mech = make("postprune", settings)
    data = streams()
    mech.end_phase(0, "d0", model, data[0])
    assert mech.flops == 0  # pruning the pretrained model multiplies nothing
    dense = forward_by_hand(p["model"], VOCAB, topology_fraction)
    pruned = forward_by_hand(p["model"], VOCAB, rho)
    assert dense > pruned  # else this test could not tell the right count from one at `pruned` throughout
    step_tokens = p["train"]["batch_size"] * p["train"]["grad_accum"] * p["model"]["block_size"]
    for k in (1, 2):
        before = mech.flops
        mech.begin_phase(k, f"d{k}", model)
        result = train_phase(model, data[k], 1536, p["train"], seed=0, phase=k, mechanism=mech, device=CPU,
                             resume_file=tmp_path / f"r{k}.pt", label="t")
        mech.end_phase(k, f"d{k}", model, data[k])
        finetune = round(ff * result.steps)
        assert finetune > 0 and result.steps - finetune > 0
        expected = 3 * step_tokens * ((result.steps - finetune) * dense + finetune * pruned)
        assert mech.flops - before == pytest.approx(expected, rel=1e-12), f"phase {k}"


def test_a_topology_already_at_rho_is_refused_naming_the_key(toy_params):
    """Refused by the params check, before any stage runs; dense is accepted, as is rho 1 (the off switch)."""
    p = copy.deepcopy(toy_params)
    p["topologies"], p["mechanisms"], p["references"] = ["dense", "random"], ["none", "postprune"], []
    p["mechanism"]["postprune"]["rho"] = p["density"]
    with pytest.raises(ParamsError, match=r"mechanism\.postprune\.rho: .* topology 'random' .*would equal `none`"):
        validate(p)
    p["topologies"] = ["dense"]
    validate(p)
    p["topologies"], p["topology"]["random"]["allocation"] = ["random"], "powerlaw"
    with pytest.raises(ParamsError, match=r"topology\.random\.allocation: unknown value 'powerlaw'"):
        validate(p)  # an unknown allocation is listed, not a crash of the rho check
    p["topology"]["random"]["allocation"] = "uniform"
    p["topologies"], p["mechanism"]["postprune"]["rho"] = ["random"], 1.0
    validate(p)


# --- the stages: sequential saves the pruned pretrained model, evaluate scores it --------------------------

@pytest.fixture(scope="module")
def params():
    p = yaml.safe_load(yaml.safe_dump(TOY_PARAMS))
    p["topologies"], p["mechanisms"], p["references"] = ["dense"], ["none", "postprune"], []
    p["lr_search"]["tokens"] = 1024  # not pretraining's budget: pretrain trains (chosen_lr below), no grid run
    return p


def stage(script: str, *args, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [script, *map(str, args)])
    runpy.run_path(str(REPO / "pipeline" / f"{script}.py"), run_name="__main__")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, params, tokens):
    ws = tmp_path_factory.mktemp("postprune")
    shutil.copytree(tokens, ws / "data" / "tokens")
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    chosen_lr(ws, "dense", params["train"]["lr"])
    arm = ("--topology", "dense", "--seed", 0)
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ws)
        torch.set_num_threads(1)
        for script, extra in (("init_topologies", ()), ("pretrain", ())):
            stage(script, *arm, *extra, monkeypatch=mp)
        for mechanism in params["mechanisms"]:
            for script in ("sequential", "evaluate"):
                stage(script, *arm, "--mechanism", mechanism, monkeypatch=mp)
    torch.set_num_threads(threads)  # the stages ran on one thread, as CI's 2 cores are not oversubscribed
    return ws


def density(model) -> list[float]:
    """Nonzero share of every logical matrix."""
    out = []
    for layer in model.masked_layers().values():
        n_out, n_in = layer.block_shape
        out += ((layer.weight != 0).reshape(layer.blocks, -1).sum(1) / (n_out * n_in)).tolist()
    return out


def test_every_checkpoint_of_the_loss_matrix_has_density_rho(workspace, params):
    rho = params["mechanism"]["postprune"]["rho"]
    order, C = params["data"]["order"], params["model"]["n_embd"]
    masks = load_masks(workspace / "data/masks/dense-s0.pt")
    seq = workspace / "models/sequential/dense-postprune-s0"
    ev = read_json(workspace / "metrics/eval/dense-postprune-s0.json")["loss"]
    # The checkpoints behind its rows: phase 0 is the pruned pretrained model, the rest every phase's end.
    rows = {f"phase{k}_{d}": seq / f"phase{k}.pt" for k, d in enumerate(order)}
    assert set(rows) <= set(ev)
    for label, path in rows.items():
        model, _ = load_checkpoint(path, masks)
        exact = [kept(C * C, rho) / (C * C)] * 4 + [kept(4 * C * C, rho) / (4 * C * C)] * 2
        assert sorted(density(model)) == pytest.approx(sorted(exact * params["model"]["n_layer"])), label
    pretrained, _ = load_checkpoint(workspace / "models/pretrain/dense-s0/model.pt", masks)
    assert min(density(pretrained)) > 0.99  # what it pruned: the dense pretrained model, scored beside it
    none = read_json(workspace / "metrics/eval/dense-none-s0.json")["loss"]
    assert ev["pretrained"] == none[f"phase0_{order[0]}"] and "pretrained" not in none
    damage = ev[f"phase0_{order[0]}"][order[0]] - ev["pretrained"][order[0]]
    assert damage > 0  # pruning to rho without a fine-tune costs loss on the pretraining domain


def test_metrics_hold_the_pretraining_cost_and_the_report_the_damage(workspace, params):
    from sparsecl.report.mechanism_compare import pruning_damage

    order = params["data"]["order"]
    cost = read_json(workspace / "metrics/mechanism/dense-postprune-s0.json")
    tokens = read_json(workspace / "models/pretrain/dense-s0/train_summary.json")["tokens"]
    vocab = read_json(workspace / "data/tokens/manifest.json")["vocab_size"]
    assert cost["pretrain_flops"] == pytest.approx(3 * forward_by_hand(params["model"], vocab, 1.0) * tokens)
    assert cost["pretrain_flops"] == read_json(workspace / "metrics/mechanism/dense-none-s0.json")["pretrain_flops"]
    ev = read_json(workspace / "metrics/eval/dense-postprune-s0.json")["loss"]
    d = pruning_damage(ev, order[0])
    assert d["domain"] == order[0]
    assert d["core"] == pytest.approx(ev[f"phase0_{order[0]}"][order[0]] - ev["pretrained"][order[0]])
    assert pruning_damage(read_json(workspace / "metrics/eval/dense-none-s0.json")["loss"], order[0]) is None
