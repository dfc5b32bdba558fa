"""The replay family (ER, DER++, LoRD) against what its papers' code does, on toy data."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparsecl.mechanisms import make
from sparsecl.mechanisms.buffer import ReservoirBuffer, coarse_log_probs
from sparsecl.cost import block_weights, param_count
from sparsecl.mechanisms.lord import stage, subnetwork_entries, unit_order
from sparsecl.train.loop import train_phase
from test_mechanisms import CPU, DOMAINS, tiny


pytestmark = pytest.mark.usefixtures("one_thread")


def batch(domain=1, n=2, length=33):
    x = torch.from_numpy(DOMAINS[domain][: n * length].astype(np.int64)).view(n, length)
    return x[:, :-1], x[:, 1:]


def train(model, mech, toy_params, tmp_path, phase, tcfg=None):
    train_phase(model, DOMAINS[phase], 1536, tcfg or toy_params["train"], seed=0, phase=phase, mechanism=mech,
                device=CPU, resume_file=tmp_path / f"r{phase}.pt", label="t")


# --- ER ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("weight", [1.0, 2.0])
def test_er_loss_is_one_mean_over_the_concatenated_batch(toy_params, weight):
    """Mammoth's ER: the current and the replayed windows form one batch with one mean; `weight` counts a
    replayed token that many times."""
    model = tiny(toy_params)
    mech = make("er", {**toy_params["mechanism"]["er"], "weight": weight})
    mech.end_phase(0, "d0", model, DOMAINS[0])
    mech.begin_phase(1, "d1", model)
    x, y = batch()
    draws = copy.deepcopy(mech.rng)
    loss = mech.loss(model, x, y)
    bx, by, _ = mech.buffer.sample(toy_params["mechanism"]["er"]["replay_batch"], draws)
    logits = model(torch.cat([x, bx]))[0]
    nll = F.cross_entropy(logits.flatten(0, 1), torch.cat([y, by]).flatten(), reduction="none")
    w = torch.cat([torch.ones(y.numel()), torch.full((by.numel(),), weight)])
    assert len(bx) == 4 and torch.allclose(loss, (w * nll).sum() / w.sum(), atol=1e-6)


# --- DER++ ---------------------------------------------------------------------------------------------------

def test_coarse_distribution_by_hand():
    """softmax([0, ln 2, ln 3, 0]) = [1, 2, 3, 1] / 7: tokens 2 and 1, and the rest (tokens 0 and 3)."""
    logits = torch.tensor([0.0, math.log(2), math.log(3), 0.0])
    ids = torch.tensor([2, 1])
    assert torch.allclose(coarse_log_probs(logits, ids).exp(), torch.tensor([3 / 7, 2 / 7, 2 / 7]))
    # Mass moved onto a token outside the k leaves their logits as they were (a top-k logit target is
    # blind to it) but not the coarse distribution: [1, 2, 3, 2] / 8.
    moved = logits.clone()
    moved[3] = math.log(2)
    assert torch.equal(moved.gather(0, ids), logits.gather(0, ids))
    assert torch.allclose(coarse_log_probs(moved, ids).exp(), torch.tensor([3 / 8, 2 / 8, 3 / 8]))
    # A rest mass far below fp32's resolution of 1 - (top-k mass) is still exact.
    confident = torch.zeros(1000).index_fill_(0, torch.tensor([0]), 100.0)
    rest = coarse_log_probs(confident, torch.tensor([0]))[-1]
    assert rest.item() == pytest.approx(-100 + math.log(999), abs=1e-3)


def test_derpp_target_is_the_inserting_models_distribution_and_sums_to_one(toy_params, tmp_path):
    k = toy_params["mechanism"]["derpp"]["logit_topk"]
    model = tiny(toy_params)
    mech = make("derpp", {**toy_params["mechanism"]["derpp"], "beta": 0.0})
    mech.end_phase(0, "d0", model, DOMAINS[0])
    n = len(mech.buffer)
    stored = mech.buffer.windows[:n].long()
    values, ids = mech.buffer.values[:n].clone(), mech.buffer.indices[:n].clone()
    assert values.shape == (n, toy_params["model"]["block_size"], k + 1)
    assert torch.allclose(values.exp().sum(-1), torch.ones(values.shape[:-1]), atol=1e-5)
    with torch.no_grad():
        logp = model.eval()(stored[:, :-1])[0].log_softmax(-1)
    top = logp.topk(k, dim=-1)
    assert torch.equal(top.indices.int(), ids) and torch.allclose(values[..., :k], top.values, atol=1e-5)
    # The logit term is 0 for the inserting model and grows as training moves the model away; the stored
    # targets stay as they were at insertion.
    mech.begin_phase(1, "d1", model)
    assert mech.replay_loss(model).item() == pytest.approx(0.0, abs=1e-9)
    train(model, mech, toy_params, tmp_path, 1)
    assert torch.equal(mech.buffer.values[:n], values) and mech.replay_loss(model).item() > 1e-3


# --- buffers are full and memory is what they hold -------------------------------------------------------

@pytest.mark.parametrize("name", ["er", "derpp", "lord"])
def test_buffer_is_full_after_the_pretraining_phase(toy_params, name):
    settings = toy_params["mechanism"][name]
    mech = make(name, settings)
    model = tiny(toy_params)
    mech.end_phase(0, "d0", model, DOMAINS[0])
    assert len(mech.buffer) == settings["buffer_size"]


def test_lord_admits_its_rate_of_each_domain_and_fills_the_buffer_at_any_occupancy(toy_params):
    settings = {**toy_params["mechanism"]["lord"], "insert_decay": 3.0}
    toy_params["density"] = 0.05
    model = tiny(toy_params)
    mech = make("lord", settings)
    mech.end_phase(0, "d0", model, DOMAINS[0])
    offered = math.ceil(settings["buffer_size"] * math.exp(3.0))
    assert mech.buffer.seen == round(offered * math.exp(-3.0 * mech.occupancy)) >= settings["buffer_size"]
    assert mech.insert_probability() == pytest.approx(math.exp(-3.0 * mech.occupancy))
    assert len(mech.buffer) == settings["buffer_size"]


def test_memory_counts_the_filled_slots():
    buf = ReservoirBuffer(10)
    buf.offer(torch.zeros(3, 33, dtype=torch.long), torch.Generator().manual_seed(0))
    assert buf.nbytes() == 3 * 33 * 4


# --- LoRD's student ----------------------------------------------------------------------------------------

def lord_at_phase1(toy_params, student="grow", start=0.25, topology="dense"):
    settings = {**toy_params["mechanism"]["lord"], "student": student, "start_fraction": start, "full_at_phase": 3}
    model = tiny(toy_params, topology)
    mech = make("lord", settings)
    mech.end_phase(0, "d0", model, DOMAINS[0])
    pretrained = copy.deepcopy(model)
    mech.begin_phase(1, "d1", model)
    return model, mech, pretrained, stage(mech.order, mech.trainable_fraction(1))


def outside_entries(model, units, heads):
    return {n: ~m for n, m in subnetwork_entries(model, units, heads).items()}


@pytest.mark.parametrize("topology", ["dense", "random"])
def test_lord_units_beyond_the_stage_are_out_of_the_network(toy_params, topology):
    model, mech, pretrained, (units, heads) = lord_at_phase1(toy_params, topology=topology)
    assert [int(u.sum()) for u in units] == [32, 32] and [int(h.sum()) for h in heads] == [1, 1]
    x, y = batch()
    # The student computes what the pretrained model computes with those units' and heads' outputs cut
    # (GPT.subnetwork, which zeroes activations): zeroing their weights changed nothing else.
    with torch.no_grad(), pretrained.subnetwork(units, heads):
        cut = pretrained(x)[0]
    assert torch.allclose(model(x)[0], cut, atol=1e-6)
    assert not torch.allclose(model(x)[0], pretrained(x)[0], atol=1e-3)
    # ... and they get no gradient at all, from every term of the loss.
    params = dict(model.named_parameters())
    mech.loss(model, x, y).backward()
    for name, outside in outside_entries(model, units, heads).items():
        grad = params[name].grad
        assert torch.count_nonzero(grad[outside]) == 0, name
        assert torch.count_nonzero(params[name][outside]) == 0, name
    assert all(torch.count_nonzero(params[n].grad[~o]) > 0
               for n, o in outside_entries(model, units, heads).items() if n.endswith("mlp.c_fc.weight"))


def test_lord_stage_units_are_the_largest_and_the_fraction_grows(toy_params, tmp_path):
    model, mech, pretrained, (units, heads) = lord_at_phase1(toy_params)
    assert [mech.trainable_fraction(k) for k in (1, 2, 3, 4)] == pytest.approx([0.25, 0.625, 1.0, 1.0])
    for block, u in zip(pretrained.transformer.h, units):
        norm = block.mlp.c_proj.weight.abs().sum(0)
        assert norm[u.bool()].min() >= norm[~u.bool()].max()  # OFA's order: largest outgoing weights first
    assert all(s.sum() == 1 for s in stage(mech.order, 1e-6)[0] + stage(mech.order, 1e-6)[1])
    train(model, mech, toy_params, tmp_path, 1)
    mech.end_phase(1, "d1", model, DOMAINS[1])
    # The teacher is a subnetwork of the stage's network; occupancy counts the whole width.
    assert all(bool((t <= s).all()) for t, s in zip(mech.units + mech.heads, units + heads))
    assert mech.occupancy == pytest.approx(block_weights(model, mech.units, mech.heads) / block_weights(pretrained))
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    held = mech.extra_memory_bytes() - mech.buffer.nbytes() - 4 * int(param_count(mech.teacher, mech.units, mech.heads))
    assert held == 4 * sum(int(o.sum()) for o in outside_entries(model, units, heads).values())
    mech.begin_phase(2, "d2", model)
    later, later_heads = stage(mech.order, 0.625)
    params = dict(model.named_parameters())
    before = dict(pretrained.named_parameters())
    for name, inside in subnetwork_entries(model, units, heads).items():
        joined = subnetwork_entries(model, later, later_heads)[name] & ~inside
        assert torch.equal(params[name][inside], trained[name][inside])  # the stage as trained
        assert torch.equal(params[name][joined], before[name][joined])    # rejoined with the held values
        assert torch.count_nonzero(params[name][~subnetwork_entries(model, later, later_heads)[name]]) == 0


def test_lord_freeze_ablation_keeps_every_unit_active_and_trains_the_stage_only(toy_params, tmp_path):
    model, mech, pretrained, (units, heads) = lord_at_phase1(toy_params, student="freeze")
    x, _ = batch()
    assert torch.equal(model(x)[0], pretrained(x)[0])
    train(model, mech, toy_params, tmp_path, 1)
    params, before = dict(model.named_parameters()), dict(pretrained.named_parameters())
    for name, inside in subnetwork_entries(model, units, heads).items():
        assert torch.equal(params[name][~inside], before[name][~inside]), name
    fc = "transformer.h.0.mlp.c_fc.weight"
    assert (params[fc] != before[fc]).any(1).tolist() == units[0].bool().tolist()
    assert mech.metrics()["trainable_fraction"] == {"phase1_d1": 0.25}


def test_lord_replays_every_nth_optimizer_step_under_accumulation(toy_params, tmp_path):
    model, mech, _, _ = lord_at_phase1(toy_params, start=1.0)
    steps = []
    replay = mech.replay_loss
    mech.replay_loss = lambda m: steps.append(mech.step) or replay(m)
    tcfg = {**toy_params["train"], "grad_accum": 2, "batch_size": 4}
    train(model, mech, toy_params, tmp_path, 1, tcfg)  # 1536 tokens: 6 steps of 2 micro-batches
    assert steps == [s for s in range(0, 6, toy_params["mechanism"]["lord"]["replay_every"]) for _ in range(2)]
