"""The sparse training kernel (train.kernel: sparse) computes what the masked one does: the same products
and gradients on the kept weights, the same loss and updated weights after a step, masked entries at 0,
and checkpoints of either path resume with the other."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparsecl.mechanisms import make as make_mechanism
from sparsecl.model import GPT, GPTConfig
from sparsecl.model.gpt import MaskedLinear
from sparsecl.model.sparse_linear import SparseKernels, SparseLinear
from sparsecl.train.loop import choose_kernel, train_phase
from sparsecl.topology.store import make_masks

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
TOKENS = np.random.default_rng(0).integers(0, 64, 5000).astype(np.uint16)


def _model(params) -> GPT:
    params["density"] = 0.1
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, **params["model"]), masks=make_masks(params, "random", 0))


def _train(model, params, kernel, steps, tmp_path, name="r.pt", on_step=None):
    tcfg = {**params["train"], "kernel": kernel}
    block = params["model"]["block_size"]
    return train_phase(model, TOKENS, steps * tcfg["batch_size"] * block, tcfg, seed=0, phase=0,
                       mechanism=make_mechanism("none", {}), device=CPU, resume_file=tmp_path / name, label="t",
                       on_step=on_step)


@pytest.mark.parametrize("rows", [3, 80])  # CSR for a few rows, embedding_bag for many
def test_sparse_linear_gradients_are_the_masked_ones_on_kept_entries(rows):
    layer = MaskedLinear(24, 40, bias=True, blocks=1)
    layer.set_mask(torch.rand(40, 24) < 0.2)
    sparse = SparseLinear(layer)
    x = torch.randn(rows, 24, requires_grad=True)
    dy = torch.randn(rows, 40)
    F.linear(x, layer.effective_weight, layer.bias).backward(dy)
    dense_dx, x.grad = x.grad, None
    sparse(x).backward(dy)
    assert sparse.values.shape == (int(layer.mask.sum()),)  # one gradient per kept weight
    torch.testing.assert_close(sparse.values.grad, layer.weight.grad[layer.mask], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, dense_dx, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sparse.bias.grad, layer.bias.grad)


def test_one_sparse_step_equals_the_masked_step(toy_params, tmp_path):
    masked, sparse = _model(toy_params), _model(toy_params)
    a = _train(masked, toy_params, "masked", 1, tmp_path, "a.pt")
    b = _train(sparse, toy_params, "sparse", 1, tmp_path, "b.pt")
    assert (a.kernel, b.kernel) == ("masked", "sparse")
    assert b.final_loss == pytest.approx(a.final_loss, abs=1e-5)
    for (name, p), q in zip(masked.named_parameters(), sparse.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-5, msg=name)
    # The model is masked again after the phase, its masked entries exactly 0.
    layers = sparse.masked_layers()
    assert len(layers) == 4 * toy_params["model"]["n_layer"]
    assert all(not l.weight[~l.mask].any() for l in layers.values())


@pytest.mark.parametrize("first,second", [("sparse", "masked"), ("masked", "sparse")])
def test_a_checkpoint_of_one_kernel_resumes_with_the_other(toy_params, tmp_path, first, second):
    toy_params["train"]["ckpt_every"] = 2
    reference = _model(toy_params)
    _train(reference, toy_params, "masked", 4, tmp_path, "ref.pt")

    def killed(done, masked):
        if done == 3:  # after the step-2 checkpoint
            raise KeyboardInterrupt

    model = _model(toy_params)
    with pytest.raises(KeyboardInterrupt):
        _train(model, toy_params, first, 4, tmp_path, on_step=killed)
    assert model.masked_layers()  # the masked layers are back after the error
    resumed = _model(toy_params)
    _train(resumed, toy_params, second, 4, tmp_path)
    for (name, p), q in zip(reference.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-5, msg=name)


def test_auto_measures_and_the_masked_kernel_stays_where_sparse_cannot_run(toy_params):
    model = _model(toy_params)
    x = torch.randint(0, 64, (2, 16))
    before = [p.detach().clone() for p in model.parameters()]
    kernel, why = choose_kernel(model, {"kernel": "auto"}, make_mechanism("none", {}), x, x, CPU, repeats=1)
    assert kernel in ("masked", "sparse") and "masked" in why and "sparse" in why and " ms" in why
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))  # measuring changed nothing
    assert all(p.grad is None for p in model.parameters()) and model.masked_layers()
    ewc = make_mechanism("ewc", toy_params["mechanism"]["ewc"])
    assert choose_kernel(model, {"kernel": "sparse"}, ewc, x, x, CPU)[0] == "masked"
    toy_params["density"] = 1.0
    dense = GPT(GPTConfig(vocab_size=64, **toy_params["model"]))
    assert choose_kernel(dense, {"kernel": "sparse"}, make_mechanism("none", {}), x, x, CPU) == \
        ("masked", "no masked matrix")


def test_the_masked_view_inside_the_kernels_is_the_trained_model(toy_params):
    model = _model(toy_params)
    with SparseKernels(model) as kernels:
        assert not model.masked_layers()
        with torch.no_grad():
            next(iter(kernels.swapped.values())).values.add_(1.0)
        trained = next(iter(kernels.swapped.values())).values.detach().clone()
        with kernels.masked() as view:
            layer = next(iter(view.masked_layers().values()))
            kept = layer.weight[layer.mask]
            assert len(view.masked_layers()) == len(kernels.layers)
        assert torch.equal(kept, trained)  # the view holds the values trained under the kernel
        assert torch.equal(next(iter(kernels.swapped.values())).values, kept)
