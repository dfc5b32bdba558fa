"""The exported sparse model computes what the masked model does (logits, generated tokens, with and without
the KV cache), and its complexity figures add up."""
import pytest
import torch
import torch.nn.functional as F

from sparsecl.model import GPT, GPTConfig
from sparsecl.model.gpt import MaskedLinear
from sparsecl.model.sparse_export import (SparseLinear, export_sparse, inference_complexity, latency,
                                          next_token_logits, nonzeros)
from sparsecl.topology.store import make_masks

CFG = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.0, bias=False, mlp_activation="gelu", topk_k=8)


def _model(density: float, bias: bool = False, only: str = "", block_size: int = CFG["block_size"]) -> GPT:
    """Random masks at `density` on every sparsified matrix, or only on those whose name contains `only`."""
    random = {"allocation": "uniform", "no_dead_units": False, "same_mask_every_layer": False}
    params = {"density": density, "model": {**CFG, "bias": bias, "block_size": block_size},
              "topology": {"random": random}}
    masks = {n: m for n, m in make_masks(params, "random", 0).items() if only in n}
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, **params["model"]), masks=masks)
    with torch.no_grad():  # trained-looking weights: nonzero biases, masked entries still 0 through the mask
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_exported_logits_equal_masked():
    idx = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))
    for density, bias in ((0.05, False), (0.1, True)):
        model = _model(density, bias)
        sparse = export_sparse(model)
        assert sum(isinstance(m, SparseLinear) for m in sparse.modules()) == len(model.masked_layers())
        with torch.no_grad():
            assert torch.allclose(sparse(idx)[0], model(idx)[0], atol=1e-4, rtol=0)
        assert torch.allclose(next_token_logits(sparse, idx), model(idx)[0][:, -1], atol=1e-4, rtol=0)


def test_sparse_linear_equals_linear_for_few_and_many_rows():
    """Both kernels (CSR for a generation step's few rows, embedding_bag for many), outputs with no nonzero."""
    torch.manual_seed(0)
    layer = MaskedLinear(24, 40, bias=True)
    mask = (torch.rand(40, 24) < 0.1).float()
    mask[:5] = 0  # outputs with no nonzero at all: their bias only
    layer.set_mask(mask)
    sparse = SparseLinear(layer)
    assert sparse.nnz == nonzeros(layer)
    for x in (torch.randn(2, 7, 24), torch.randn(3, 40, 24), torch.randn(24)):
        with torch.no_grad():
            assert torch.allclose(sparse(x), F.linear(x, layer.weight * mask, layer.bias), atol=1e-6, rtol=0)


def test_sparse_next_to_dense_layers():
    """Only some matrices exported: the dense MLP c_proj takes the sparse c_fc's feature-major result."""
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(2))
    model = _model(0.05, only="mlp.c_fc")
    sparse = export_sparse(model)
    assert sum(isinstance(m, SparseLinear) for m in sparse.modules()) == CFG["n_layer"]
    assert torch.allclose(next_token_logits(sparse, idx), model(idx)[0][:, -1], atol=1e-4, rtol=0)


def test_dense_layers_stay_dense_and_complexity_adds_up():
    dense = _model(1.0)
    assert not any(isinstance(m, SparseLinear) for m in export_sparse(dense).modules())
    model = _model(0.05)
    sparse = export_sparse(model)
    c = inference_complexity(model, sparse)
    kept = model.param_counts()
    assert c["masked"]["params_active"] == c["sparse"]["params_active"] == kept["params_active"]
    assert c["dense"]["params_active"] == kept["params_total"]
    cfg = model.cfg  # every matrix and the LM head at 2 FLOPs per weight, attention over a full context
    every_weight = sum(m.weight.numel() for m in model.masked_layers().values()) + model.lm_head.weight.numel()
    dense_flops = 2 * every_weight + 4 * cfg.n_embd * cfg.block_size * cfg.n_layer
    assert c["masked"]["flops_per_token"] == c["dense"]["flops_per_token"] == dense_flops
    # The sparse form multiplies the kept weights only: 2 FLOPs for each weight it no longer multiplies.
    saved = kept["sparsified_params"] - kept["sparsified_kept"]
    assert c["dense"]["flops_per_token"] - c["sparse"]["flops_per_token"] == 2 * saved
    assert c["sparse"]["stored_bytes"] < c["dense"]["stored_bytes"] < c["masked"]["stored_bytes"]
    lat = latency(model, sparse, repeats=2)
    assert (lat["batch"], lat["context"], lat["threads"]) == (1, cfg.block_size, torch.get_num_threads())


STEPS = 32


def _prompt(batch: int = 3, length: int = 5) -> torch.Tensor:
    return torch.randint(0, 64, (batch, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("block_size", [64, 16])  # 16: the context outgrows the block and is cropped
@pytest.mark.parametrize("temperature,top_k", [(0.0, None), (1.0, None), (0.8, 10)])
def test_masked_and_exported_generate_the_same_tokens_with_and_without_cache(block_size, temperature, top_k):
    model = _model(0.1, bias=True, block_size=block_size)
    sparse = export_sparse(model)
    prompt = _prompt()
    runs = {(name, cache): m.generate(prompt, STEPS, temperature=temperature, top_k=top_k, use_cache=cache,
                                      generator=torch.Generator().manual_seed(7))
            for name, m in (("masked", model), ("sparse", sparse)) for cache in (True, False)}
    first = runs["masked", True]
    assert first.shape == (3, 5 + STEPS) and torch.equal(first[:, :5], prompt)
    assert all(torch.equal(out, first) for out in runs.values())
    if temperature:  # another seed draws other tokens: the generator is what seeds them
        other = model.generate(prompt, STEPS, temperature=temperature, generator=torch.Generator().manual_seed(8))
        assert not torch.equal(other, first)


def test_cached_steps_give_the_full_context_logits():
    """A prompt fed in two chunks and then one token at a time through the cache: each position's logits
    are the full forward's."""
    model = _model(0.1, bias=True, block_size=32)
    idx = _prompt(2, 20)
    full = model(idx)[0]
    cache = model.new_cache()
    with torch.no_grad():
        got = [model(idx[:, :6], cache=cache)[0], model(idx[:, 6:12], cache=cache)[0]]
        got += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(12, 20)]
    assert cache[0].length == 20
    expected = torch.stack([full[:, 5], full[:, 11], *full[:, 12:20].unbind(1)], dim=1)
    assert torch.allclose(torch.cat(got, dim=1), expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="block_size"):
        model(idx, cache=cache)
