"""Data parallelism over the processes `torchrun` starts: PyTorch's DistributedDataParallel, gloo on CPU and
nccl on CUDA. Without torchrun (no WORLD_SIZE in the environment) everything here is a no-op for one process.

Every rank draws the same global batch (it depends only on seed, phase and step) and trains on its own
equal slice of it; DDP averages the gradients, so N processes take the optimizer step of one process with
the same `train.batch_size`. Masks must be identical on every rank (checked at start); only rank 0 writes
files and logs.
"""
from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from sparsecl.errors import DistributedSetupError


def launch_if_asked(nproc: int) -> None:
    """Rerun this script under `torchrun --standalone --nproc_per_node=nproc` when params ask for more than
    one process and it is not running under torchrun already (DVC's stage command stays `python ...`)."""
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               *sys.argv]
        print(f"launching {nproc} processes: torchrun {' '.join(cmd[3:])}", flush=True)
        sys.exit(subprocess.call(cmd))


def init(device: torch.device) -> None:
    """Join the process group torchrun set up (once per process); CUDA ranks take the GPU of their local rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo")


def close() -> None:
    """Leave the process group: a process that exits with it open can abort ("terminate called without an
    active exception") and fail the whole torchrun."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def print_main(message: str) -> None:
    """Progress output, once (from rank 0)."""
    if is_main():
        print(message, flush=True)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def from_main(value):
    """Rank 0's `value` on every rank: a choice made by timing (train.kernel: auto) must not differ between
    ranks, whose DDP models would then hold different parameters."""
    if world_size() > 1:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def check_identical(what: str, digest: str) -> None:
    """Check that every rank holds the same `what`, given its content hash on this rank (else an error naming
    the ranks that differ): a mask that differs between ranks would train a model that exists nowhere."""
    if world_size() > 1:
        digests: list[str] = [""] * world_size()
        dist.all_gather_object(digests, digest)
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            raise DistributedSetupError(f"{what} differ between ranks: ranks {differ} do not match rank 0 "
                                        f"({digests[0][:12]})")
        print_main(f"{what}: identical on {world_size()} ranks (sha256 {digest[:12]})")


def shard_size(batch_size: int) -> int:
    """Rows of each global batch one rank trains on."""
    n = world_size()
    if batch_size % n:
        raise DistributedSetupError(f"train.batch_size: {batch_size} does not split evenly over {n} processes; "
                                    f"use a multiple of {n}")
    return batch_size // n


def shard(x: torch.Tensor) -> torch.Tensor:
    """This rank's equal slice of a global batch (rows)."""
    size = shard_size(len(x))
    return x[rank() * size: (rank() + 1) * size]


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """`model` inside DDP when there are several processes. Buffers (the fixed masks) are not re-broadcast
    every forward pass: they were checked identical at start and never change."""
    if world_size() == 1:
        return model
    return DistributedDataParallel(model, forward_sync_buffers=False)


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over the ranks (a logged loss: each rank saw a different slice)."""
    if world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= world_size()
    return value
