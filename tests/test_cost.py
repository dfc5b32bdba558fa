"""sparsecl.cost: the one count of parameters and FLOPs, checked by hand on a tiny model, and what every
former counting place now reads from it."""
import numpy as np
import pytest
import torch

from sparsecl import cost
from sparsecl.model import GPT, GPTConfig
from sparsecl.model.sparse_export import export_sparse, inference_complexity
from sparsecl.report.analyze import Arm, crossovers, train_flops_per_token
from sparsecl.topology.store import diagnostics, make_masks, model_counts

# vocabulary 11, context 8, 2 layers of width 8 with 2 heads (head_dim 4); no biases
TINY = dict(block_size=8, n_layer=2, n_head=2, n_embd=8)
V, T, L, C = 11, 8, 2, 8
BLOCK = 3 * C * C + C * C + 4 * C * C + 4 * C * C  # q,k,v + attention output + MLP fc + MLP proj: 768
ATTENTION = L * 4 * C * T  # per layer: scores q.k (2 x head_dim per position and head) and values, every head


def tiny(masks=None, **over) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, **TINY, **over), masks=masks)


def half_fc_masks(model: GPT) -> dict:
    """The first layer's MLP fc keeps its even input columns (half its 256 weights); the rest dense."""
    mask = torch.zeros(4 * C, C, dtype=torch.bool)
    mask[:, ::2] = True
    return {"transformer.h.0.mlp.c_fc": mask}


def test_dense_counts_by_hand():
    model = tiny()
    layernorms = (2 * L + 1) * C  # ln_1, ln_2 per block and ln_f, weights only (bias False)
    total = V * C + T * C + L * BLOCK + layernorms  # the tied LM head is the token embedding: counted once
    counts = cost.param_counts(model)
    assert counts["params_total"] == counts["params_active"] == total == 1728
    assert counts["sparsified_params"] == counts["sparsified_kept"] == L * BLOCK
    assert cost.param_count(model) == total and cost.embedding_params(model) == V * C
    assert cost.attention_flops(model.cfg) == ATTENTION == 512
    forward = 2 * (L * BLOCK + V * C) + ATTENTION
    assert cost.forward_flops(model) == forward == 3760
    assert cost.train_flops(model) == cost.pretrain_flops_per_token(model) == 3 * forward
    assert cost.kernel_flops(model) == forward  # every weight is nonzero: the kernels multiply the same


def test_masked_topk_and_subnetwork_counts_by_hand():
    model = tiny()
    model = tiny(half_fc_masks(model))
    kept = L * BLOCK - 128
    assert cost.param_counts(model)["sparsified_kept"] == kept
    assert cost.forward_flops(model) == 2 * (kept + V * C) + ATTENTION
    # Dense kernels on weight * mask multiply every entry; the export's CSR matrix only the kept ones.
    assert cost.kernel_flops(model) == 2 * (L * BLOCK + V * C) + ATTENTION
    assert cost.kernel_flops(export_sparse(model, max_density=1.0)) == 2 * (kept + V * C) + ATTENTION
    # A weight that training set to 0 is not multiplied, unless the count is structural (the mask's entries).
    with torch.no_grad():
        model.transformer.h[1].attn.c_proj.weight[0, :] = 0
    assert cost.forward_flops(model) == 2 * (kept - C + V * C) + ATTENTION
    assert cost.forward_flops(model, structural=True) == 2 * (kept + V * C) + ATTENTION
    # topk: 4 of the 32 units fire, so the MLP's output projection counts 4/32 of its 256 weights.
    k = tiny(mlp_activation="topk", topk_k=4)
    assert cost.forward_flops(k) == 2 * (L * (BLOCK - 256 + 32) + V * C) + ATTENTION
    # A subnetwork: layer 0 keeps 16 of 32 units and 1 of 2 heads, layer 1 everything.
    dense = tiny()
    units = [torch.tensor([1.0] * 16 + [0.0] * 16), torch.ones(4 * C)]
    heads = [torch.tensor([1.0, 0.0]), torch.ones(2)]
    dropped = 16 * C * 2 + (3 * 4 * C + C * 4)  # 16 units' fc rows and proj columns; one head's q,k,v rows, out cols
    assert cost.forward_flops(dense, units, heads) == 2 * (L * BLOCK - dropped + V * C) + 3 * 4 * (C // 2) * T
    assert cost.param_count(dense, units, heads) == cost.param_count(dense) - dropped


def test_the_model_the_export_and_the_topology_summary_give_the_cost_modules_counts(toy_params):
    masks = make_masks(toy_params, "random", 0)
    cfg = GPTConfig(vocab_size=50, **toy_params["model"])
    model = GPT(cfg, masks=masks)
    counts = cost.param_counts(model)
    assert model.param_counts() == counts
    c = inference_complexity(model, export_sparse(model))
    assert c["dense"]["params_active"] == counts["params_total"]
    assert c["masked"]["params_active"] == counts["params_active"]  # fresh masked weights: nonzero where kept
    assert c["masked"]["flops_per_token"] == cost.kernel_flops(model)
    assert c["sparse"]["flops_per_token"] == cost.forward_flops(model)  # gelu: the sparse kernels' = the count
    s = diagnostics(masks, toy_params)["summary"]
    # The topology summary leaves out the token embedding, whatever the vocabulary
    assert s["model_active_non_embedding"] == counts["params_active"] - cost.embedding_params(model)
    assert model_counts(toy_params, s["nnz"], s["sparsified_params"]) == {
        k: s[k] for k in ("model_params_non_embedding", "model_active_non_embedding", "model_density_non_embedding")}


def test_the_reports_crossover_flops_are_the_pretrainings_per_token_flops(toy_params):
    """Changed convention: the crossover was 6 x active parameters per token (no attention); it is now the
    pretraining's training FLOPs per token, as the mechanisms count them (attention included)."""
    model = GPT(GPTConfig(vocab_size=50, **toy_params["model"]), masks=make_masks(toy_params, "random", 0))
    params = {**toy_params, "topologies": ["dense", "random"], "mechanisms": ["none"], "seeds": [0]}
    per_token = {"dense": 3e5, "random": cost.pretrain_flops_per_token(model)}
    costs = {f"{t}-none-s0": {"pretrain_flops_per_token": f} for t, f in per_token.items()}
    flops = train_flops_per_token(params, costs)
    assert flops == {("dense", 0): 3e5, ("random", 0): per_token["random"]}
    assert per_token["random"] == 3 * (2 * cost.matmul_weights(model, structural=True) + cost.attention_flops(model.cfg))
    # the sparse arm starts worse and ends better: it crosses at phase 0.51 (margin 0.02)
    losses = {"dense": [2.0, 2.0, 2.0, 2.0], "random": [3.0, 1.0, 1.0, 1.0]}
    arms = [Arm(t, "none", 0, np.array(v)[:, None], np.zeros(1), np.zeros(1, int), np.zeros(4, int), np.zeros(0))
            for t, v in losses.items()]
    cross = crossovers(arms, params, flops)["random-none-s0_vs_dense"]
    tokens = params["pretrain"]["tokens"] + 0.51 * params["phase"]["tokens"]
    assert cross["core_crossed"] == 1 and cross["core_tokens"] == pytest.approx(tokens)
    assert cross["core_flops"] == cross["core_tokens"] * per_token["random"]
    assert cross["core_dense_flops"] == cross["core_tokens"] * 3e5


def test_the_benchs_model_flops_are_6n_plus_attention_without_the_layernorms():
    """Changed convention: bench/train_throughput.py counted 6 N + 12 n_layer n_embd block_size with N every
    parameter but the position embedding (LayerNorm weights included); sparsecl.cost counts matmul weights."""
    model = tiny()
    n = cost.param_counts(model)["params_total"] - model.transformer.wpe.weight.numel()
    layernorms = (2 * L + 1) * C
    assert cost.train_flops(model) == 6 * (n - layernorms) + 12 * L * C * T


def test_the_cost_module_and_the_model_import_no_higher_layer():
    """cost.py imports nothing of the package; model/ imports neither topology/ nor anything above it."""
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "sparsecl"

    def imported(path: Path) -> set[str]:
        out = set()
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Import):
                out |= {a.name for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.module:  # `from sparsecl import cost`: sparsecl.cost
                out |= {f"{n.module}.{a.name}" for a in n.names} if n.module == "sparsecl" else {n.module}
        return out

    assert not {m for m in imported(src / "cost.py") if m.startswith("sparsecl")}
    allowed = ("sparsecl.model", "sparsecl.errors", "sparsecl.io", "sparsecl.cost")
    for path in (src / "model").glob("*.py"):
        inside = {m for m in imported(path) if m.startswith("sparsecl")}
        assert all(m.startswith(allowed) for m in inside), (path.name, inside)
