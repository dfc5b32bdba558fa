"""Sparse matrix products that touch only a matrix's kept entries, for inference and for training.

`CSRPattern` is a fixed sparsity pattern (CSR row offsets and column indices, int32, and the same for the
transpose); `SparseLinear` is an nn.Linear whose weight is the pattern's `values` (one per kept entry) and
whose forward and backward run on them only: y = x W^T and dX = dY W by CSR products, dW on the kept
entries only by `torch.sparse.sampled_addmm`. Its gradient and so its optimizer state are one number per
kept weight. `SparseKernels(model)` swaps every masked matrix of a `GPT` for one for the length of a
training phase and writes the values back into the masked weights at the end (and for a checkpoint within
it): checkpoints and everything outside the phase see the masked model.

Kernels (CPU, stock PyTorch): for a few rows of x (a generation step) MKL's CSR `torch.sparse.mm`, given
int32 indices and x^T as a transposed view, so it converts and copies nothing; for many rows
`F.embedding_bag` over x^T (row i of x^T is input feature i across all tokens; output o sums its row's
columns weighted by its values), which streams whole contiguous rows and is faster there
(bench/generate.py, bench/train_kernel.py).
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

# Rows of x up to which MKL's CSR product beats embedding_bag (measured on the 2-core CPU, widths 128-1024:
# at 1-8 rows CSR took 0.3-0.5x embedding_bag's time, at 128 rows and more 1-1.5x).
CSR_MAX_ROWS = 32

# torch.sparse CSR is marked beta; its warning would print on every run.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


class CSRPattern:
    """The kept entries of an (n_out, n_in) matrix, row-major (the order of `values`), and the transpose's
    CSR arrays with `perm`, the kept entries in the transpose's order."""

    def __init__(self, keep: torch.Tensor):
        self.shape = tuple(keep.shape)
        rows, cols = keep.nonzero(as_tuple=True)  # row-major, as CSR stores them
        self.crow, self.col = self._offsets(rows, self.shape[0]), cols.int()
        self.perm = torch.argsort(cols * self.shape[0] + rows)  # column-major: the transpose's rows
        self.crow_t, self.col_t = self._offsets(cols, self.shape[1]), rows[self.perm].int()
        self.flat = rows * self.shape[1] + cols  # positions in the flattened dense matrix
        self._zeros = torch.zeros(len(rows), dtype=torch.float32, device=keep.device)

    @staticmethod
    def _offsets(index: torch.Tensor, n: int) -> torch.Tensor:
        return F.pad(torch.bincount(index, minlength=n).cumsum(0), (1, 0)).int()

    @property
    def nnz(self) -> int:
        return self.col.numel()

    def to(self, device: torch.device) -> "CSRPattern":
        for name in ("crow", "col", "perm", "crow_t", "col_t", "flat", "_zeros"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def dense(self, values: torch.Tensor) -> torch.Tensor:
        """The (n_out, n_in) matrix with `values` at the kept entries, 0 elsewhere."""
        return values.new_zeros(self.shape).view(-1).index_copy_(0, self.flat, values).view(self.shape)

    def gather(self, dense: torch.Tensor) -> torch.Tensor:
        """The kept entries of a dense (n_out, n_in) matrix, in `values` order."""
        return dense.reshape(-1)[self.flat]

    @staticmethod
    def _product(crow, col, values, x: torch.Tensor, n_out: int) -> torch.Tensor:
        """x (N, n_in) times the transpose of the CSR matrix (n_out, n_in): (N, n_out), contiguous."""
        if x.shape[0] <= CSR_MAX_ROWS:
            w = torch.sparse_csr_tensor(crow, col, values, (n_out, x.shape[1]), check_invariants=False)
            return torch.sparse.mm(w, x.t()).t().contiguous()
        y = F.embedding_bag(col, x.t().contiguous(), crow, mode="sum", per_sample_weights=values,
                            include_last_offset=True)
        return y.t().contiguous()

    def mm(self, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """x W^T for x (N, n_in)."""
        return self._product(self.crow, self.col, values, x, self.shape[0])

    def mm_t(self, dy: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """dY W for dY (N, n_out)."""
        return self._product(self.crow_t, self.col_t, values[self.perm], dy, self.shape[1])

    def sampled(self, dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(dY^T x) at the kept entries only, in `values` order: the gradient of the kept weights."""
        pattern = torch.sparse_csr_tensor(self.crow, self.col, self._zeros.to(dy.dtype), self.shape,
                                          check_invariants=False)
        return torch.sparse.sampled_addmm(pattern, dy.t(), x, beta=0.0).values()


class _SparseProduct(torch.autograd.Function):
    """x W^T with W the pattern's values: the backward computes dX and the kept entries' dW only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, values: torch.Tensor, pattern: CSRPattern) -> torch.Tensor:
        ctx.save_for_backward(x, values)
        ctx.pattern = pattern
        return pattern.mm(x, values)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, values = ctx.saved_tensors
        dy = dy.contiguous()
        dx = ctx.pattern.mm_t(dy, values) if ctx.needs_input_grad[0] else None
        dv = ctx.pattern.sampled(dy, x) if ctx.needs_input_grad[1] else None
        return dx, dv, None


class SparseLinear(nn.Module):
    """y = x W^T + b with only W's kept entries stored (`values`, a Parameter) and multiplied; inputs of any
    leading shape, like nn.Linear. Kept entries: the layer's mask (`keep=None`) or those of `keep`."""

    def __init__(self, layer: nn.Linear, keep: torch.Tensor | None = None):
        super().__init__()
        if keep is None:
            keep = getattr(layer, "mask", None)
            keep = torch.ones_like(layer.weight, dtype=torch.bool) if keep is None else keep
        weight = getattr(layer, "effective_weight", layer.weight).detach()  # an nn.Linear has no mask
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.pattern = CSRPattern(keep.bool())
        self.values = nn.Parameter(self.pattern.gather(weight).clone(), requires_grad=layer.weight.requires_grad)
        self.bias = layer.bias  # the same Parameter: its optimizer state carries over
        self.init_gain = getattr(layer, "init_gain", 1.0)

    @property
    def nnz(self) -> int:
        return self.pattern.nnz

    @property
    def nbytes(self) -> int:
        """Bytes of the CSR form (values, column indices, row offsets, bias)."""
        parts = (self.values, self.pattern.col, self.pattern.crow) + (() if self.bias is None else (self.bias,))
        return sum(t.numel() * t.element_size() for t in parts)

    @property
    def effective_weight(self) -> torch.Tensor:
        return self.pattern.dense(self.values.detach())

    def _apply(self, fn, recurse=True):  # .to(device) moves the pattern's index tensors too
        super()._apply(fn, recurse)
        self.pattern.to(self.values.device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _SparseProduct.apply(x.reshape(-1, self.in_features), self.values, self.pattern)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def swap(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at the dotted `name` of `model` in place of what is there."""
    parent, attr = name.rsplit(".", 1)
    setattr(model.get_submodule(parent), attr, module)


class SparseKernels:
    """A context in which every masked matrix of `model` (a GPT) is a
    `SparseLinear` on its mask's entries (build the optimizer inside it). On leaving it, also on an error,
    the values are written back into the masked layers, which return; their masked entries are 0."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers = {n: m for n, m in model.masked_layers().items() if m.mask is not None}
        self.swapped = {n: SparseLinear(m) for n, m in self.layers.items()}

    def _put(self, modules: dict[str, nn.Module]) -> None:
        for name, module in modules.items():
            swap(self.model, name, module)

    def __enter__(self) -> "SparseKernels":
        with torch.no_grad():  # the masked path keeps them 0 already; then writing back the kept ones suffices
            for layer in self.layers.values():
                layer.weight.mul_(layer.mask)
        self._put(self.swapped)
        return self

    def __exit__(self, *exc) -> None:
        with torch.no_grad():  # O(kept weights)
            for name, layer in self.layers.items():
                layer.weight.view(-1).index_copy_(0, self.swapped[name].pattern.flat, self.swapped[name].values)
        self._put(self.layers)

    @contextmanager
    def masked(self):
        """The masked model within the block (to checkpoint it: its state_dict, masks and hashes are the
        masked path's); weights changed in the block are read back into the values after it."""
        self.__exit__()
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for name, layer in self.layers.items():
                    self.swapped[name].values.copy_(self.swapped[name].pattern.gather(layer.weight))
            self._put(self.swapped)

    def optimizer_state(self, state: dict, opt: torch.optim.Optimizer, to_sparse: bool) -> dict:
        """An optimizer state_dict converted between the masked form (a moment per weight of every masked
        matrix) and the sparse form (a moment per kept weight) for `opt`, the optimizer built inside the
        block. The masked path's moments of masked entries are exactly 0 (so are their gradients), so both
        forms hold the same numbers and a checkpoint of either path resumes with the other. Both optimizers
        number their parameters alike: `make_optimizer` groups a matrix's values as it groups its weight."""
        params = [p for group in opt.param_groups for p in group["params"]]  # state_dict's numbering
        by_values = {id(m.values): m.pattern for m in self.swapped.values()}
        out = {"param_groups": state["param_groups"], "state": {}}
        for i, entry in state["state"].items():
            pattern = by_values.get(id(params[int(i)]))
            out["state"][i] = entry if pattern is None else {
                k: (pattern.gather(v) if to_sparse else pattern.dense(v)) if torch.is_tensor(v) and v.dim() else v
                for k, v in entry.items()}
        return out


__all__ = ["CSRPattern", "SparseKernels", "SparseLinear"]
