"""Running under torchrun: who this process is, where it computes, its share of the data, and
the reductions that make many processes give one result.

    torchrun --nproc_per_node 2 -m n2c train ...        # one machine, two processes
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv-endpoint HOST:29500 -m n2c train ...

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; :func:`setup` reads them and joins the
process group: NCCL when the device is a GPU, gloo on CPUs. Without torchrun, n2c is one
process (``World()``) and nothing here communicates.

Data parallelism (``n2c.ann.train.fit``): every process holds the model (DistributedDataParallel
averages the gradients), ``torch.utils.data.DistributedSampler`` deals each process its share
of one permutation, and the global batch ``--batch-size`` is split evenly over the processes,
so that a step sees the samples one process would see in that step (identical up to float
summation order; BatchNorm is synchronized on GPUs, per process on CPUs, where torch has no
SyncBatchNorm). Evaluation and calibration give each process a contiguous shard
(:meth:`World.shard`) and reduce counts (:meth:`World.sum`) or gather values
(:meth:`World.gather`). Rank 0 alone prints and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from n2c.errors import N2CError

DEVICES = ("cpu", "cuda")


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """``cpu`` (default) or ``cuda`` (the process's GPU: ``cuda:LOCAL_RANK``), or ``cuda:N``."""
    name = name or "cpu"
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise N2CError(f"unknown device {name!r}; use cpu or cuda (or cuda:N)")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise N2CError(f"--device {name}: this machine has no CUDA GPU that torch can use; drop --device "
                           "(runs on the CPU)")
        index = int(name.split(":")[1]) if ":" in name else local_rank
        if index >= torch.cuda.device_count():
            raise N2CError(f"--device {name}: there are {torch.cuda.device_count()} GPUs (cuda:0 to "
                           f"cuda:{torch.cuda.device_count() - 1})")
        return torch.device("cuda", index)
    return torch.device("cpu")


@dataclass(frozen=True)
class World:
    """This process among ``size`` (rank 0 is the main one) and its device."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, n: int) -> slice:
        """This process's contiguous share of ``n`` items: [⌊r·n/W⌋, ⌊(r+1)·n/W⌋)."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def sum(self, values):
        """Σ over the processes of a number or array (float64, exact for counts below 2^53)."""
        if not self.distributed:
            return values
        t = torch.as_tensor(np.asarray(values, np.float64), device=self._comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        out = t.cpu().numpy()
        return out if np.ndim(values) else float(out)

    def gather(self, array: np.ndarray) -> np.ndarray:
        """The arrays of all processes joined along axis 0, in rank order (shapes may differ in
        their first axis)."""
        if not self.distributed:
            return array
        return np.concatenate(self.gather_objects(np.asarray(array)))

    def gather_objects(self, obj) -> list:
        """Every process's ``obj`` (anything picklable: sent between n2c's own processes only), in
        rank order."""
        if not self.distributed:
            return [obj]
        parts: list = [None] * self.size
        dist.all_gather_object(parts, obj)
        return parts

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def setup(device: str | None = None) -> World:
    """The world of this process: under torchrun (WORLD_SIZE > 1) join the process group
    (NCCL for GPUs, gloo for CPUs) once; otherwise a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    where = resolve_device(device, local_rank)
    if size > 1:
        if not dist.is_available():
            raise N2CError("this torch has no torch.distributed; run without torchrun")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if where.type == "cuda" else "gloo")
        if where.type == "cuda":
            torch.cuda.set_device(where)
    return World(rank, size, local_rank, where)


def shutdown(world: World) -> None:
    """The end of a successful command: every process waits for the others, so that none exits
    while another still needs the group (rank 0 hosts its store). After a failure nothing is
    owed: the process ends at once (:func:`exit_now_if_distributed`)."""
    if world.distributed and dist.is_initialized():
        dist.barrier()


def check_global_batch(batch_size: int, world: World) -> None:
    """The global batch must split evenly over the processes."""
    if batch_size % world.size:
        raise N2CError(f"--batch-size {batch_size} is the global batch and must split evenly over the "
                       f"{world.size} processes; use a multiple of {world.size}")


def exit_now_if_distributed(code: int) -> None:
    """Under torchrun, end the process at once with ``code`` (output flushed first). torch 2.3's
    gloo group neither leaves cleanly nor lets go: ``destroy_process_group`` hung now and then once
    rank 0 had exited, and an exit without it aborted in gloo's threads ("terminate called without
    an active exception"). Everything this process had to write is written by now."""
    if dist.is_available() and dist.is_initialized():
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
