"""Every topology at several shapes and densities: exact counts, exact degrees, locality, seeding, spectra."""
import numpy as np
import pytest
import torch

from sparsecl.model import GPT, GPTConfig, layer_blocks
from sparsecl.params import ParamsError, validate
from sparsecl.topology import TOPOLOGIES, brf
from sparsecl.topology.allocation import allocate, spread
from sparsecl.topology.store import diagnostics, make_masks, spectral

# Square, 4x wide (more outputs than inputs, like MLP fc) and 4x narrow (like MLP proj), plus a fused
# q,k,v layer of three logical matrices.
SHAPES = {"square": (1, (64, 64)), "wide": (1, (256, 64)), "narrow": (1, (64, 256)), "qkv": (3, (64, 64))}
DENSITIES = (0.01, 0.05, 0.3)
SPARSE = sorted(set(TOPOLOGIES) - {"dense", "narrow"})  # narrow: the dense capacity control, tested below
SETTINGS = {"allocation": "uniform", "randomness": 0.0, "degree_dist": "fixed"}


def build(topology, density, seed=0, blocks=SHAPES, n_head=4, **settings):
    schema = TOPOLOGIES[topology].SCHEMA
    s = {k: v for k, v in (SETTINGS | settings).items() if k in schema or k == "n_head"}
    return TOPOLOGIES[topology].build(blocks, density, s | {"n_head": n_head}, np.random.default_rng(seed))


def logical(masks, name, blocks=SHAPES):
    n, shape = blocks[name]
    return masks[name].view(n, *shape)


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("topology", SPARSE + ["brf-random"])
def test_same_exact_nnz_per_logical_matrix_as_every_other_topology(topology, density):
    settings = {"randomness": 0.7, "degree_dist": "uniform"} if topology == "brf-random" else {}
    masks = build(topology.split("-")[0], density, **settings)
    nnz = allocate(SHAPES, density, "erk" if topology == "erk" else "uniform")
    for name in SHAPES:
        assert logical(masks, name).sum((1, 2)).tolist() == [nnz[name]] * SHAPES[name][0], name
        assert masks[name].dtype == torch.bool


@pytest.mark.parametrize("density", DENSITIES)
def test_expander_rows_and_columns_at_exact_degrees(density):
    masks = build("expander", density)
    for name, (_, (n_out, n_in)) in SHAPES.items():
        nnz = round(density * n_out * n_in)
        for block in logical(masks, name):
            assert block.sum(1).tolist() == spread(nnz, n_out).tolist()
            assert block.sum(0).tolist() == spread(nnz, n_in).tolist()


def test_expander_above_half_density_is_the_complement_of_one_and_still_exact():
    block = logical(build("expander", 0.8), "wide")[0]
    assert block.sum(1).tolist() == spread(round(0.8 * 256 * 64), 256).tolist()
    assert block.sum(0).tolist() == spread(round(0.8 * 256 * 64), 64).tolist()


def brf_view(block):
    """The block as BRF builds it: rows = the smaller side, columns = the ring."""
    return block if block.shape[0] <= block.shape[1] else block.T


@pytest.mark.parametrize("density", DENSITIES)
def test_brf_r0_is_local_and_r1_is_not(density):
    local, spread_out = build("brf", density, randomness=0.0), build("brf", density, randomness=1.0)
    for name in SHAPES:
        for r, masks in ((0, local), (1, spread_out)):
            block = brf_view(logical(masks, name)[0]).numpy()
            n, m = block.shape
            dist = brf.ring_distance(n, m)
            k = block.sum(1)
            # A row's k nearest columns on the ring lie within k/2 (+ 1/2 for a centre between columns).
            outside = ((dist > (k[:, None] + 1) / 2) & block).any(1)
            if r == 0:
                assert not outside.any(), name
                assert (k == spread(int(k.sum()), n)).all()  # degree_dist fixed
            else:
                assert outside.mean() > 0.5, name


def test_brf_uniform_degree_dist_is_random_but_exact():
    block = logical(build("brf", 0.05, degree_dist="uniform"), "square")[0]
    k = block.sum(1)
    assert int(k.sum()) == round(0.05 * 64 * 64) and int(k.min()) >= 1 and int(k.max()) > int(k.min()) + 1


@pytest.mark.parametrize("density", DENSITIES)
def test_erk_keeps_uniform_total_and_no_layer_above_one(density):
    uniform, erk = allocate(SHAPES, density, "uniform"), allocate(SHAPES, density, "erk")
    assert sum(SHAPES[k][0] * v for k, v in erk.items()) == sum(SHAPES[k][0] * v for k, v in uniform.items())
    assert all(v <= SHAPES[k][1][0] * SHAPES[k][1][1] for k, v in erk.items())
    assert erk["square"] > uniform["square"] > 0  # ERK moves weights to the smaller matrices


def test_erk_caps_a_layer_at_density_one_and_resolves_the_rest():
    blocks = {"tiny": (1, (4, 4)), "big": (1, (512, 512))}
    nnz = allocate(blocks, 0.5, "erk")
    assert nnz["tiny"] == 16 and 16 + nnz["big"] == sum(allocate(blocks, 0.5, "uniform").values())


@pytest.mark.parametrize("topology,settings", [(t, {}) for t in SPARSE if t != "brf"] +
                         [("brf", {"randomness": 0.5}), ("brf", {"degree_dist": "uniform"})])
def test_same_seed_same_mask_other_seed_different(topology, settings):
    a, b, c = (build(topology, 0.05, seed=s, **settings) for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_brf_r0_with_fixed_degrees_needs_no_seed():
    a, b = build("brf", 0.05, seed=0), build("brf", 0.05, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_expander_is_ramanujan_on_256_square_at_degree_8_and_random_er_is_not():
    blocks, density = {"x": (1, (256, 256))}, 8 / 256
    bound = 2 * np.sqrt(7)
    expander = spectral(build("expander", density, blocks=blocks)["x"])
    er = spectral(build("random", density, blocks=blocks)["x"])
    print(f"\n256x256, d=8: Ramanujan bound {bound:.3f}; expander sigma2 {expander['sigma2']:.3f}; "
          f"random ER at the same density sigma2 {er['sigma2']:.3f}")
    assert expander["ramanujan_bound"] == pytest.approx(bound)
    assert expander["sigma2"] <= bound < er["sigma2"]


@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_diagnostics_of_every_topology_are_numbers_and_consistent(toy_params, topology):
    toy_params["density"] = 0.1
    toy_params["topology"] |= {"brf": SETTINGS, "expander": {"allocation": "uniform"}}
    d = diagnostics(make_masks(toy_params, topology, 0), toy_params)
    s = d["summary"]
    # The capacity control matches the sparse arms' count per block, not per matrix: within 2% here.
    assert s["density"] == pytest.approx(1.0 if topology == "dense" else 0.1, rel=0.02 if topology == "narrow" else 0.01)
    # The counts agree with a model built with these masks (its token embedding: vocab 1 x n_embd).
    counts = GPT(GPTConfig(vocab_size=1, **toy_params["model"]), masks=make_masks(toy_params, topology, 0)).param_counts()
    n_embd = toy_params["model"]["n_embd"]
    assert s["nnz"] == counts["sparsified_kept"] and s["sparsified_params"] == counts["sparsified_params"]
    assert s["model_active_non_embedding"] == counts["params_active"] - n_embd
    assert s["model_params_non_embedding"] == counts["params_total"] - n_embd
    for layer in d["layers"].values():
        assert layer["sigma2"] >= 0 and (layer["ramanujan_bound"] > 0 or topology == "narrow")
        assert all(isinstance(v, (int, float)) and np.isfinite(v) for v in layer.values())


@pytest.mark.parametrize("density", DENSITIES)
def test_capacity_control_has_the_sparse_arms_active_block_weights_within_2_percent(density):
    """At the default shape (4 layers, width 128, 4 heads): a dense model of narrower inner widths whose
    block weights are within 2% of the random arm's, with whole rows and columns and every head kept."""
    blocks = dict(layer_blocks(GPTConfig(vocab_size=1)))
    narrow = build("narrow", density, blocks=blocks, n_head=4)
    sparse = build("random", density, blocks=blocks)
    kept, target = (sum(int(m.sum()) for m in masks.values()) for masks in (narrow, sparse))
    assert abs(kept / target - 1) < 0.02, (kept, target)
    for i in range(4):
        qkv, fc = narrow[f"transformer.h.{i}.attn.c_attn"], narrow[f"transformer.h.{i}.mlp.c_fc"]
        rows = fc.any(1)
        assert torch.equal(fc[rows], torch.ones_like(fc[rows])) and 1 <= int(rows.sum()) < 512  # whole units
        assert torch.equal(narrow[f"transformer.h.{i}.mlp.c_proj"].any(0), rows)  # proj columns = fc rows
        dims = qkv[:128].any(1)
        assert torch.equal(qkv[128:256].any(1), dims) and torch.equal(qkv[256:].any(1), dims)  # q, k, v alike
        per_head = dims.view(4, 32).sum(1)
        assert per_head.sum() >= 1 and (density < 0.05 or len(set(per_head.tolist())) == 1)  # heads alike


def test_capacity_control_computes_what_a_narrower_dense_network_computes():
    """Dropped MLP units and attention inner dimensions are exactly 0 in the forward pass (so they carry
    nothing and learn nothing), and each kept row's init keeps the dense output scale: gain 1 for the full
    fc rows, sqrt(hidden / kept units) for the proj rows."""
    cfg = GPTConfig(vocab_size=50, n_layer=2, n_head=2, n_embd=32, block_size=16)
    masks = build("narrow", 0.25, blocks=dict(layer_blocks(cfg)), n_head=2)
    model = GPT(cfg, masks=masks)
    x = torch.randint(0, 50, (2, 16))
    acts = []
    model(x, acts=acts)
    for i, h in enumerate(acts):
        units = masks[f"transformer.h.{i}.mlp.c_fc"].any(1)
        assert torch.all(h[..., ~units] == 0) and torch.all(h[..., units] != 0)
        qkv = model.transformer.h[i].attn.c_attn(torch.randn(3, 32))
        assert torch.all(qkv[:, ~masks[f"transformer.h.{i}.attn.c_attn"].any(1)] == 0)
        layers = model.transformer.h[i].mlp
        kept = int(units.sum())
        assert layers.c_fc.init_gain == 1.0 and layers.c_proj.init_gain == pytest.approx((128 / kept) ** 0.5)


def test_topology_settings_are_validated(toy_params):
    toy_params["topologies"] = ["dense", "brf", "expander", "erk"]
    toy_params["topology"]["brf"] = {"allocation": "erk", "randomness": 1.5, "degree_dist": "powerlaw"}
    with pytest.raises(ParamsError) as e:
        validate(toy_params)
    msg = str(e.value)
    assert "topology.brf.randomness: 1.5" in msg and "'powerlaw', allowed: fixed, uniform" in msg
    assert "topology.expander: missing settings" in msg and "topology.erk" not in msg
