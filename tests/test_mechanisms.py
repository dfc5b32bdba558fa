"""Mechanisms: off switches reproduce `none` bit for bit, and each one does what its paper says."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from sparsecl import params as params_mod
from sparsecl.mechanisms import MECHANISMS, make
from sparsecl.mechanisms.buffer import ReservoirBuffer
from sparsecl.mechanisms.common import probe_windows, restore_snapshot, snapshot, snapshot_state
from sparsecl.cost import block_weights, forward_flops, param_count
from sparsecl.model import GPT, GPTConfig
from sparsecl.topology.store import make_masks
from sparsecl.train.loop import train_phase

VOCAB = 64
CPU = torch.device("cpu")
# Each mechanism's natural off switch.
OFF = {"none": {}, "ewc": {"lambda": 0.0}, "er": {"weight": 0.0}, "derpp": {"alpha": 0.0, "beta": 0.0},
       "ssd": {"alpha": 1.0}, "lord": {"alpha": 0.0, "beta": 0.0, "distill": 0.0, "start_fraction": 1.0},
       "postprune": {"rho": 1.0}}


def domains(n=3, length=3000, vocab=VOCAB):
    """Token streams that differ in distribution, so a phase really changes the model."""
    out = []
    for d in range(n):
        rng = np.random.default_rng(d)
        base = rng.integers(0, vocab, 50)
        out.append(base[rng.integers(0, 50, length)].astype(np.uint16))
    return out


DOMAINS = domains()


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(toy_params, topology="random", **model):
    toy_params["model"].update(model)
    masks = make_masks(toy_params, topology, 0)
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=VOCAB, **toy_params["model"]), masks=masks)


def run(model, mech, toy_params, tmp_path, phases=2, tokens=1536):
    """What the sequential stage does: end_phase(0) on the pretrained model, then begin/train/end per phase."""
    mech.end_phase(0, "d0", model, DOMAINS[0])
    for k in range(1, phases + 1):
        mech.begin_phase(k, f"d{k}", model)
        train_phase(model, DOMAINS[k], tokens, toy_params["train"], seed=0, phase=k, mechanism=mech, device=CPU,
                    resume_file=tmp_path / f"{type(mech).__name__}{k}.pt", label="t")
        mech.end_phase(k, f"d{k}", model, DOMAINS[k])
    return model


def test_every_mechanism_has_valid_toy_settings(toy_params):
    toy_params["mechanisms"] = sorted(MECHANISMS)
    params_mod.validate(toy_params)
    assert set(OFF) == set(MECHANISMS)


@pytest.mark.parametrize("name", sorted(set(MECHANISMS) - {"none"}))
def test_off_switch_reproduces_none_bit_for_bit(toy_params, tmp_path, name):
    reference = run(tiny(toy_params), make("none", {}), toy_params, tmp_path).state_dict()
    settings = {**toy_params["mechanism"][name], **OFF[name]}
    model = run(tiny(toy_params), make(name, settings), toy_params, tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), f"{name}: {key} differs from none"


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_masked_weights_stay_zero_and_costs_are_counted(toy_params, tmp_path, name):
    mech = make(name, toy_params["mechanism"][name])
    model = run(tiny(toy_params), mech, toy_params, tmp_path)
    for layer in model.masked_layers().values():
        assert torch.count_nonzero(layer.weight[~layer.mask.bool()]) == 0
    plain = 2 * 3 * forward_flops(model) * 1536  # two phases of forward + backward
    assert mech.flops > 0.5 * plain
    holds_state = name not in ("none", "postprune")  # a Fisher, a buffer or a teacher
    assert (mech.extra_memory_bytes() > 0) == holds_state and all(math.isfinite(v) for v in flat(mech.metrics()))


def flat(d):
    for v in d.values():
        yield from (flat(v) if isinstance(v, dict) else [v])


def test_state_dict_round_trip_resumes_identically(toy_params, tmp_path):
    """A mechanism restored from its state (as after a kill) continues exactly like the original."""
    settings = toy_params["mechanism"]["lord"]
    a, b = make("lord", settings), make("lord", settings)
    model = tiny(toy_params)
    a.end_phase(0, "d0", model, DOMAINS[0])
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        m.begin_phase(1, "d1", model)
    x = torch.from_numpy(DOMAINS[1][:33].astype(np.int64))[None]
    assert torch.equal(a.loss(model, x[:, :-1], x[:, 1:]), b.loss(model, x[:, :-1], x[:, 1:]))


# --- EWC ---------------------------------------------------------------------------------------------

def test_ewc_penalty_zero_at_anchor_positive_elsewhere_and_fisher_zero_on_masks(toy_params):
    model = tiny(toy_params)
    mech = make("ewc", toy_params["mechanism"]["ewc"])
    mech.end_phase(0, "d0", model, DOMAINS[0])
    mech.begin_phase(1, "d1", model)
    assert mech.penalty().item() == 0.0
    for name, layer in model.masked_layers().items():
        fisher = mech.fisher[f"{name}.weight"]
        assert torch.count_nonzero(fisher[~layer.mask.bool()]) == 0
        assert torch.count_nonzero(fisher[layer.mask.bool()]) > 0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    assert mech.penalty().item() > 0


# --- replay --------------------------------------------------------------------------------------------

def test_reservoir_keeps_a_uniform_sample():
    """1000 sequences offered in 10 batches to a 50-slot buffer, 400 times: every tenth of the stream
    should hold 5 slots on average (chi-square test, fixed seed)."""
    rng = torch.Generator().manual_seed(0)
    counts = np.zeros(10)
    for _ in range(400):
        buf = ReservoirBuffer(50)
        for batch in torch.arange(1000).view(10, 100, 1):
            buf.offer(batch.expand(100, 2), rng)
        counts += np.bincount(buf.windows[:, 0].numpy() // 100, minlength=10)
    assert counts.sum() == 400 * 50 and buf.seen == 1000
    assert stats.chisquare(counts).pvalue > 0.001


# DER++'s stored distribution, ER's single batch and LoRD's buffer: tests/test_replay.py.


# --- SSD -------------------------------------------------------------------------------------------------

def test_ssd_frequencies_selection_and_loss_with_student_equal_to_teacher(toy_params):
    settings = toy_params["mechanism"]["ssd"]
    model = tiny(toy_params, mlp_activation="topk", topk_k=settings["k"])
    mech = make("ssd", settings)
    mech.end_phase(0, "d0", model, DOMAINS[0])
    # Counted on the previous domain with the teacher: the k-WTA winners of the teacher's forward pass.
    windows = probe_windows(DOMAINS[0], settings["freq_tokens"], model)
    acts = []
    with torch.no_grad():
        mech.teacher(windows[:, :-1], acts=acts)
    fired = torch.stack([(a != 0).float().mean((0, 1)) for a in acts])
    assert torch.allclose(mech.freqs[0], fired)
    assert torch.allclose(mech.freqs[0].sum(1), torch.full((len(acts),), float(settings["k"])))
    assert mech.selected[0].shape == (toy_params["model"]["n_layer"], round(settings["n_ratio"] * settings["k"]))
    # The selected units are the most frequent ones: none left out fires more often than one selected.
    selected = torch.zeros_like(mech.freqs[0], dtype=torch.bool).scatter_(1, mech.selected[0], True)
    for freq, sel in zip(mech.freqs[0], selected):
        assert freq[sel].min() >= freq[~sel].max()
    # Student == teacher (the start of a phase): both KL terms vanish and the loss is alpha * CE.
    mech.begin_phase(1, "d1", model)
    x = torch.from_numpy(DOMAINS[1][:66].astype(np.int64)).view(2, -1)
    ce = model(x[:, :-1], x[:, 1:])[1]
    assert torch.allclose(mech.loss(model, x[:, :-1], x[:, 1:]), settings["alpha"] * ce)
    with torch.no_grad():
        model.lm_head.weight.add_(0.5 * torch.randn_like(model.lm_head.weight))
    assert mech.loss(model, x[:, :-1], x[:, 1:]) > settings["alpha"] * model(x[:, :-1], x[:, 1:])[1]


def test_ssd_reports_coverage_and_jaccard(toy_params, tmp_path):
    mech = make("ssd", toy_params["mechanism"]["ssd"])
    run(tiny(toy_params), mech, toy_params, tmp_path)
    m = mech.metrics()
    assert 0 < m["coverage"] <= 1 and set(m["coverage_per_phase"]) == {"phase0_d0", "phase1_d1", "phase2_d2"}
    assert set(m["jaccard"]) == {"phase0_d0-phase1_d1", "phase0_d0-phase2_d2", "phase1_d1-phase2_d2"}
    assert all(0 <= v <= 1 for v in m["jaccard"].values())


def test_teacher_snapshot_round_trip(toy_params):
    model = tiny(toy_params)
    teacher = restore_snapshot(snapshot_state(snapshot(model)))
    x = torch.randint(0, VOCAB, (2, 16))
    assert torch.equal(teacher(x)[0], model.eval()(x)[0]) and not any(p.requires_grad for p in teacher.parameters())


# --- LoRD ------------------------------------------------------------------------------------------------

# LoRD's student (units beyond the stage out of the network, the freeze ablation): tests/test_replay.py.

def test_lord_pruned_teacher_and_insertion_probability(toy_params):
    settings = toy_params["mechanism"]["lord"]
    toy_params["density"] = 0.05  # the default: the embedding is most of such a model, not of its subnetworks
    model = tiny(toy_params)
    mech = make("lord", settings)
    mech.end_phase(0, "d0", model, DOMAINS[0])
    kept = block_weights(mech.teacher, mech.units, mech.heads)
    assert kept / block_weights(model) == pytest.approx(mech.occupancy) and mech.occupancy < 0.95
    assert param_count(mech.teacher, mech.units, mech.heads) < param_count(model)
    assert mech.insert_probability() == pytest.approx(math.exp(-0.75 * mech.occupancy))


# --- postprune -----------------------------------------------------------------------------------------

def test_postprune_has_exactly_the_target_density_after_each_phase(toy_params, tmp_path):
    rho = toy_params["mechanism"]["postprune"]["rho"]
    model = tiny(toy_params, "dense")
    mech = make("postprune", toy_params["mechanism"]["postprune"])
    mech.end_phase(0, "d0", model, DOMAINS[0])
    for k in (1, 2):
        mech.begin_phase(k, f"d{k}", model)
        train_phase(model, DOMAINS[k], 1536, toy_params["train"], seed=0, phase=k, mechanism=mech, device=CPU,
                    resume_file=tmp_path / f"r{k}.pt", label="t")
        for layer in model.masked_layers().values():
            n_out, n_in = layer.block_shape
            nnz = (layer.weight != 0).view(layer.blocks, -1).sum(1)
            assert nnz.tolist() == [round(rho * n_out * n_in)] * layer.blocks
        assert mech.metrics()["sparsified_density"] == pytest.approx(rho, abs=0.01)
    assert forward_flops(model) < 0.6 * forward_flops(tiny(toy_params, "dense"))


def test_softened_kl_matches_autograd():
    from sparsecl.mechanisms.ssd import softened_kl
    student = torch.randn(2, 3, 50, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 3, 50, dtype=torch.float64)
    T = 4.0
    reference = torch.nn.functional.kl_div(torch.log_softmax(student / T, -1).flatten(0, 1),
                                           torch.log_softmax(teacher / T, -1).flatten(0, 1),
                                           log_target=True, reduction="batchmean")
    (expected,) = torch.autograd.grad(reference, student)
    loss = softened_kl(teacher, student, T)
    loss.backward()
    assert torch.allclose(loss.double(), reference) and torch.allclose(student.grad, expected.float().double(), atol=1e-6)


@pytest.mark.parametrize("name", sorted(MECHANISMS))
def test_every_mechanism_completes_an_order_that_revisits_a_domain(toy_params, tmp_path, name):
    """d0 (pretraining), d1, d0, d1: per-visit state keyed by phase, and a revisit offers the buffer windows
    it does not hold yet (no sequence twice)."""
    mech = make(name, toy_params["mechanism"][name])
    model = tiny(toy_params)
    order = [0, 1, 0, 1]
    mech.end_phase(0, "d0", model, DOMAINS[0])
    for k in range(1, len(order)):
        mech.begin_phase(k, f"d{order[k]}", model)
        train_phase(model, DOMAINS[order[k]], 768, toy_params["train"], seed=0, phase=k, mechanism=mech, device=CPU,
                    resume_file=tmp_path / f"r{k}.pt", label="t")
        mech.end_phase(k, f"d{order[k]}", model, DOMAINS[order[k]])
    for layer in model.masked_layers().values():
        assert torch.count_nonzero(layer.weight[~layer.mask.bool()]) == 0
    assert all(math.isfinite(v) for v in flat(mech.metrics()))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    if hasattr(mech, "buffer"):
        held = mech.buffer.windows[: len(mech.buffer)]
        assert len(torch.unique(held, dim=0)) == len(held)
        assert mech.visits == {"d0": 2, "d1": 2}


def test_a_revisit_offers_windows_the_first_visit_did_not(toy_params):
    """Every window of the second visit starts block_size + 1 tokens after the first visit's (wrapping at the
    end), so the two offers share no window, the last one included."""
    mech, model = make("er", toy_params["mechanism"]["er"]), tiny(toy_params)
    first, second = (mech.candidates("d0", 16, model, DOMAINS[0]) for _ in range(2))
    assert not {tuple(w.tolist()) for w in first} & {tuple(w.tolist()) for w in second}
    assert mech.visits == {"d0": 2}
