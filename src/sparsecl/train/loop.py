"""One training phase: AdamW (or SGD), warmup + cosine, clipping, accumulation, resume, progress, and the
kernel of the sparsified matrices (`train.kernel`: masked dense products, or sparse ones on kept weights)."""
from __future__ import annotations

import math
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sparsecl.data.batches import batch_rng, sample_batch
from sparsecl.device import autocast
from sparsecl.errors import IntegrityError, NonFiniteLossError
from sparsecl.io import tensors_sha256, torch_load, torch_save
from sparsecl.mechanisms import Mechanism
from sparsecl.model.sparse_linear import SparseKernels, SparseLinear
from sparsecl.train import distributed

def make_optimizer(model, tcfg: dict, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (or SGD), weight decay on matrices only (nanoGPT); masked entries are 0 and decoupled decay keeps
    them 0. Each masked matrix's lr is `train.matrix_lr_ratio` x its init gain (group key `lr_scale`):
    Adam's step is the same size for every weight, so a matrix whose weights start `init_gain` times larger
    (a sparse one) takes that many times smaller relative steps at equal lr. Scaled by its gain, every
    topology's matrices take the same relative step, and the ratio sets that step against the embedding's
    (docs/COMPARISONS.md: at one lr for all, dense blocks moved sqrt(1/density) times too fast)."""
    gains = {id(m.weight): m.init_gain for m in model.masked_layers().values()}
    # Under the sparse kernel a masked matrix's weight is its kept values (1-D), grouped as its weight is.
    gains |= {id(m.values): m.init_gain for m in model.modules() if isinstance(m, SparseLinear)}
    groups: dict[tuple[bool, float], list] = {}
    for p in model.parameters():
        if p.requires_grad:
            scale = tcfg["matrix_lr_ratio"] * gains[id(p)] if id(p) in gains else 1.0
            groups.setdefault((p.dim() >= 2 or id(p) in gains, scale), []).append(p)
    param_groups = [{"params": ps, "weight_decay": tcfg["weight_decay"] if decay else 0.0, "lr_scale": scale}
                    for (decay, scale), ps in groups.items()]
    if tcfg["optimizer"] == "sgd":
        return torch.optim.SGD(param_groups, lr=tcfg["lr"], momentum=tcfg["beta1"])
    return torch.optim.AdamW(param_groups, lr=tcfg["lr"], betas=(tcfg["beta1"], tcfg["beta2"]),
                             fused=device.type == "cuda")


def lr_at(step: int, steps: int, tcfg: dict) -> float:
    """Linear warmup, then cosine decay to lr * min_lr_ratio at the phase's last step."""
    lr, warmup = tcfg["lr"], min(tcfg["warmup_steps"], max(steps - 1, 0))
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - 1 - warmup)
    return lr * (tcfg["min_lr_ratio"] + (1 - tcfg["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * progress)))


def steps_for(tokens: int, tcfg: dict, block_size: int) -> int:
    return max(1, math.ceil(tokens / (tcfg["batch_size"] * tcfg["grad_accum"] * block_size)))


def _all_finite(model: torch.nn.Module) -> bool:
    return bool(torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all())


def _step_seconds(model, x: torch.Tensor, y: torch.Tensor, device: torch.device, repeats: int) -> float:
    """Median seconds of a forward and backward pass on (x, y); gradients are dropped after each."""
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        with autocast(device):
            loss = model(x, y, return_logits=False)[1]
        loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def choose_kernel(model, tcfg: dict, mechanism: Mechanism, x: torch.Tensor, y: torch.Tensor,
                  device: torch.device, repeats: int = 3) -> tuple[str, str]:
    """(kernel, why) for this phase: `train.kernel` as set, masked where the sparse kernel has nothing to
    do (no masked matrix) or the mechanism reads weights by shape, and for `auto` the faster of the two
    forward and backward passes on this phase's first batch, measured side by side (RNG state restored, so
    the measurement changes nothing the run computes)."""
    kernel = tcfg["kernel"]
    if kernel == "masked":
        return "masked", "train.kernel: masked"
    if not mechanism.sparse_kernel_ok:
        return "masked", f"{type(mechanism).__name__} reads weights by shape (Mechanism.sparse_kernel_ok)"
    if not any(m.mask is not None for m in model.masked_layers().values()):
        return "masked", "no masked matrix"
    if device.type != "cpu":  # no bf16 sparse products, and their timing would need a device sync
        return "masked", f"the sparse kernel is CPU-only (device {device.type})"
    if kernel == "sparse":
        return "sparse", "train.kernel: sparse"
    rng = torch.get_rng_state()
    masked_s = _step_seconds(model, x, y, device, repeats)
    with SparseKernels(model):
        sparse_s = _step_seconds(model, x, y, device, repeats)
    torch.set_rng_state(rng)
    choice = distributed.from_main("sparse" if sparse_s < masked_s else "masked")
    return choice, (f"train.kernel: auto, forward + backward of the first batch: masked {masked_s * 1e3:.1f} ms, "
                    f"sparse {sparse_s * 1e3:.1f} ms (rank 0's)")


@dataclass
class PhaseResult:
    steps: int
    tokens: int
    seconds: float
    final_loss: float  # mean training loss over the last logging window
    kernel: str = "masked"  # the sparsified matrices' kernel this phase trained with (train.kernel)


def train_phase(model: torch.nn.Module, tokens: np.ndarray, n_tokens: int, tcfg: dict, *, seed: int, phase: int,
                mechanism: Mechanism, device: torch.device, resume_file: Path, label: str,
                log: Callable[[dict], None] | None = None,
                on_step: Callable[[int, Callable], None] | None = None) -> PhaseResult:
    """Train `model` on `tokens` for `n_tokens`, resuming from `resume_file` if it holds this phase.

    The batch at each step depends only on (seed, phase, step), and model, optimizer, mechanism and RNG
    state are checkpointed together, so a killed and resumed phase ends with the same weights as an
    uninterrupted one (on CPU). Under torchrun each rank trains on its slice of every batch (DDP averages
    the gradients) and only rank 0 logs and writes the in-phase checkpoint. `on_step(steps done, masked)`
    runs after every optimizer step (the sequential stage saves its learning-speed checkpoint there, inside
    `masked()`, which puts the masked matrices back for as long as it lasts under the sparse kernel).
    """
    block = model.cfg.block_size
    steps = steps_for(n_tokens, tcfg, block)
    start = 0
    state = torch_load(resume_file, map_location=device, weights_only=False) if resume_file.exists() else None
    if state is not None and state.get("phase") != phase:
        # Left by a run killed between saving its finished phase and removing this file.
        distributed.print_main(f"[{label}] ignoring {resume_file}: it holds phase {state.get('phase')}, not {phase}")
        state = None
    if state is not None:
        if tensors_sha256(state["model"]) != state.get("model_sha256"):
            raise IntegrityError(f"{resume_file}: weights do not match their stored sha256 (corrupted); delete it "
                                 f"to restart this phase")
        model.load_state_dict(state["model"])
        start = state["step"]
    x0, y0 = sample_batch(tokens, tcfg["batch_size"], block, batch_rng(seed, phase, start * tcfg["grad_accum"]))
    kernel, why = choose_kernel(model, tcfg, mechanism, distributed.shard(x0).to(device),
                                distributed.shard(y0).to(device), device)
    distributed.print_main(f"[{label}] sparsified matrices' kernel: {kernel} ({why})")
    with SparseKernels(model) if kernel == "sparse" else nullcontext() as kernels:
        result = _train(model, tokens, steps, start, state, tcfg, seed=seed, phase=phase, mechanism=mechanism,
                        device=device, resume_file=resume_file, label=label, log=log, on_step=on_step,
                        kernels=kernels)
    result.kernel = kernel
    return result


def _train(model, tokens, steps: int, start: int, state: dict | None, tcfg: dict, *, seed: int, phase: int,
           mechanism: Mechanism, device: torch.device, resume_file: Path, label: str, log, on_step,
           kernels: SparseKernels | None) -> PhaseResult:
    """`train_phase`'s steps from `start`, with the model's sparsified matrices as `kernels` made them (None:
    masked). Checkpoints hold the masked model and optimizer state whatever the kernel."""
    block = model.cfg.block_size
    masked = kernels.masked if kernels else nullcontext
    opt = make_optimizer(model, tcfg, device)
    if state is not None:
        opt.load_state_dict(kernels.optimizer_state(state["optimizer"], opt, to_sparse=True) if kernels
                            else state["optimizer"])
        mechanism.load_state_dict(state["mechanism"])
        torch.set_rng_state(state["rng"].cpu())  # map_location moved it; RNG states live on the CPU
        distributed.print_main(f"[{label}] resuming at step {start}/{steps} from {resume_file}")
    ddp = distributed.wrap(model)
    mechanism.batch_shards = distributed.world_size()
    step_fn = torch.compile(ddp) if tcfg["compile"] and device.type == "cuda" else ddp
    accum = tcfg["grad_accum"]
    tokens_per_step = tcfg["batch_size"] * accum * block
    model.train()
    t0, window_loss, window_n, last_loss = time.perf_counter(), torch.zeros((), device=device), 0, float("nan")
    t_log, window_grad, saved = t0, torch.zeros((), device=device), start
    for step in range(start, steps):
        lr = lr_at(step, steps, tcfg)
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_scale"]
        for micro in range(accum):
            x, y = sample_batch(tokens, tcfg["batch_size"], block, batch_rng(seed, phase, step * accum + micro))
            x, y = (distributed.shard(t).to(device, non_blocking=True) for t in (x, y))
            # DDP averages gradients over the ranks on the last micro-batch's backward only.
            with nullcontext() if micro == accum - 1 or ddp is model else ddp.no_sync():
                with autocast(device):
                    loss = mechanism.loss(step_fn, x, y) / accum
                loss.backward()
            window_loss += loss.detach()
        mechanism.before_step(model)
        if tcfg["grad_clip"] > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["grad_clip"])
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        window_grad += grad_norm  # on the device: a non-finite gradient is seen at the next logging step
        opt.step()
        opt.zero_grad(set_to_none=True)
        window_n += 1
        done = step + 1
        mechanism.after_step(model, done, steps)
        if on_step:
            on_step(done, masked)  # it enters masked() only when it saves the model
        if done % tcfg["log_every"] == 0 or done == steps or done % tcfg["ckpt_every"] == 0:
            # The only host sync: once per logging window, never per step. A window with a non-finite loss,
            # gradient or weight stops the run before anything is logged or saved from it.
            last_loss, grad = float(distributed.mean(window_loss)) / window_n, float(window_grad)
            if not (math.isfinite(last_loss) and math.isfinite(grad) and _all_finite(model)):
                good = f"{resume_file} (step {saved})" if saved else "none in this phase, it restarts from its start"
                raise NonFiniteLossError(
                    f"{label}: non-finite training state at phase {phase}, step {done}/{steps} (mean loss "
                    f"{last_loss:.4g} and summed gradient norm {grad:.4g} over steps {done - window_n + 1}-{done}); "
                    f"stopped without saving it. Last good in-phase checkpoint: {good}. Lower train.lr or check "
                    f"the data")
            now = time.perf_counter()
            tok_s = window_n * tokens_per_step / max(now - t_log, 1e-9)
            distributed.print_main(f"[{label}] step {done}/{steps} loss {last_loss:.4f} lr {lr:.2e} {tok_s:,.0f} tok/s")
            if log:  # the stages pass one on rank 0 only
                log({"loss": last_loss, "lr": lr, "tokens_per_s": tok_s, "step": done})
            window_loss, window_grad = torch.zeros((), device=device), torch.zeros((), device=device)
            window_n, t_log = 0, now
            if done % tcfg["ckpt_every"] == 0 and done < steps and distributed.is_main():
                optimizer = kernels.optimizer_state(opt.state_dict(), opt, to_sparse=False) if kernels \
                    else opt.state_dict()
                with masked():
                    weights = model.state_dict()
                torch_save({"phase": phase, "step": done, "model": weights, "model_sha256": tensors_sha256(weights),
                            "optimizer": optimizer, "mechanism": mechanism.state_dict(),
                            "rng": torch.get_rng_state()}, resume_file)
                saved = done
    return PhaseResult(steps=steps, tokens=steps * tokens_per_step, seconds=time.perf_counter() - t0,
                       final_loss=last_loss)
