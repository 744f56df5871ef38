"""One process per GPU, started by torchrun; a plain single process when it is not.

torchrun sets RANK (global index), WORLD_SIZE (number of processes), LOCAL_RANK (index on this machine, which is
also the GPU index) and MASTER_ADDR/MASTER_PORT, which `init_process_group(init_method="env://")` reads.
Every helper below is a no-op in a single process, so train.py calls them unconditionally.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer; "
                         "launch with torchrun or unset it") from None


def resolve_device(device_arg: str | None) -> torch.device:
    """'auto'/None → cuda if present else cpu; 'cuda' fails with one line where no GPU is visible."""
    if device_arg in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device_arg)
    except RuntimeError:
        raise ValueError(f"unknown device {device_arg!r}: use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device_arg} asked for a GPU but none is visible; use --device cpu")
    return device


def init_distributed(device_arg: str | None = "auto") -> DistInfo:
    """Read torchrun's environment and join the process group: NCCL for CUDA, gloo for CPU."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = resolve_device(device_arg)
    if world_size <= 1:
        return DistInfo(0, 1, 0, device, True)

    if device.type == "cuda":
        # One GPU per process, chosen by LOCAL_RANK, whatever index --device named.
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                             "use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, device, rank == 0)


def is_main() -> bool:
    """True on rank 0, and in a single process: the one that logs and writes checkpoints."""
    return not dist.is_initialized() or dist.get_rank() == 0


def print_main(*args, **kwargs) -> None:
    if is_main():
        print(*args, **kwargs)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all processes, in place, and return it (e.g. correct-prediction counts for eval)."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The largest value of `tensor` over all processes, in place (e.g. "has any process been asked to stop?")."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_gather_object(obj) -> list:
    """Every rank's `obj` as a list indexed by rank (e.g. per-rank RNG states for exact resume)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
