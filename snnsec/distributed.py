"""One training run over several processes (``torchrun``): CPU processes with gloo, or one GPU each with NCCL.

``torchrun --nproc-per-node N -m snnsec ...`` starts N copies of the command; they learn their place from
torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). Without it,
everything here is a no-op for one process: :func:`world` is 1, :func:`is_main` is True.

:func:`snnsec.training.train` uses the pieces below so that N processes take the same steps as one process
on the same global batch, up to the order of float sums: each process trains on its contiguous share of every
global batch (:func:`share`), BatchNorm layers normalise with the global batch's statistics while training
(:func:`global_batchnorm`), and the gradients of the processes' shares are summed (:func:`sum_gradients`).
No ``DistributedDataParallel`` wrapper: the model keeps its module names (a classifier's feature layer, the
cache's state_dict keys), and a step hook may run extra forward and backward passes of its own (a PGD attack,
a trigger generator) that a DDP reducer would count as unfinished reductions.

Only the main process (rank 0) writes files: models, resume checkpoints, records and tables.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler

from snnsec.errors import ConfigError


def world() -> int:
    """How many processes train together (torchrun's ``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's place among them, 0 for the main process (torchrun's ``RANK``)."""
    return int(os.environ.get("RANK", "0")) if world() > 1 else 0


def local_rank() -> int:
    """This process's place on its machine: its GPU index (torchrun's ``LOCAL_RANK``)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if world() > 1 else 0


def is_main() -> bool:
    """True in the process that writes files (rank 0, or the only process)."""
    return rank() == 0


def setup() -> None:
    """Join the other processes of a torchrun launch, once (a no-op in a single process): the process group
    (gloo for CPU tensors, NCCL for CUDA tensors) and, on a machine with GPUs, ``cuda:LOCAL_RANK`` as this
    process's current device, so that device ``cuda`` (and ``--device auto``) means its own GPU. Call it
    before building models; :func:`snnsec.training.train` calls it too."""
    if world() == 1 or dist.is_initialized():
        return
    backend = "gloo"
    if torch.cuda.is_available() and local_rank() < torch.cuda.device_count():  # CPU processes may outnumber GPUs
        torch.cuda.set_device(local_rank())
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend)


def refuse(what: str) -> None:
    """One line when ``what`` (a bench, a sweep, Ray) is asked of a torchrun launch: its processes would each
    pick runs of their own, and their collectives would pair up across different runs."""
    if world() > 1:
        raise ConfigError(f"{what} cannot run under torchrun ({world()} processes): torchrun parallelises one "
                          "training run (`torchrun ... -m snnsec attack ...`); run benches without it, or on Ray")


def teardown() -> None:
    """Leave the process group (at exit of a torchrun process; a no-op otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (a no-op in a single process)."""
    if world() > 1:
        setup()
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """The main process runs the body first, the others after it: a cache entry is checked (and a damaged one
    moved aside) by one process before the others read it."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def check_device(device: torch.device) -> None:
    """One line when a process of a GPU run trains on another process's GPU (the model was built before
    :func:`setup` chose this process's device)."""
    if world() > 1 and device.type == "cuda" and device.index not in (None, local_rank()):
        raise ConfigError(f"process {rank()} trains on {device}, not on its own cuda:{local_rank()}: call "
                          "snnsec.distributed.setup() before building the model (python -m snnsec does)")


def share(size: int) -> slice:
    """This process's contiguous share of a global batch of ``size`` samples: ``size // world`` each, the
    first ``size % world`` processes one more (a final batch smaller than the world leaves some empty)."""
    base, extra = divmod(size, world())
    start = rank() * base + min(rank(), extra)
    return slice(start, start + base + (rank() < extra))


class ShareLoader:
    """This process's share (:func:`share`) of each global batch that one process's loader would give (the
    same random sampler, drawing from the same ``generator``, batches of ``batch_size``, the last one smaller).
    Only the share is loaded; an empty share (of a final batch smaller than the world) loads the batch's first
    sample for the fields' shapes and yields them cut to no sample. :attr:`sizes`: each global batch's size."""

    def __init__(self, dataset: Dataset, batch_size: int, generator: torch.Generator) -> None:
        batches = BatchSampler(RandomSampler(dataset, generator=generator), batch_size, drop_last=False)
        self.sizes = [min(batch_size, len(dataset) - i * batch_size)  # type: ignore[arg-type]
                      for i in range(len(batches))]
        # the generator as one process's loader holds it: each epoch's iterator draws its seed from it first
        self.loader = DataLoader(dataset, batch_sampler=_Shares(batches), generator=generator)

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[list[Tensor]]:
        for batch, size in zip(self.loader, self.sizes):
            mine = share(size)
            yield batch if mine.stop > mine.start else [part[:0] for part in batch]


class _Shares(Sampler[list[int]]):
    """The indices of this process's share of each batch ``batches`` yields (the first index for an empty one)."""

    def __init__(self, batches: BatchSampler) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield batch[share(len(batch))] or batch[:1]

    def __len__(self) -> int:
        return len(self.batches)


class _SumAcrossProcesses(torch.autograd.Function):
    """All-reduce (sum) with a gradient: the gradient of a sum shared by all processes is the sum of the
    gradients every process's loss sends to it."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def sum_across(tensor: Tensor) -> Tensor:
    """The sum of ``tensor`` over all processes, differentiable (``tensor`` itself in a single process)."""
    return _SumAcrossProcesses.apply(tensor) if world() > 1 else tensor


def syncable() -> tuple[type[nn.Module], ...]:
    """The BatchNorm classes :func:`global_batchnorm` stands in for: torch's, and spikingjelly's step-mode ones."""
    from spikingjelly.activation_based import layer

    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, layer.BatchNorm1d, layer.BatchNorm2d, layer.BatchNorm3d)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Stands in for one BatchNorm layer while training over processes: in training mode it normalises with
    the mean and (biased) variance of the global batch, the samples of all processes together, and updates the
    running statistics with them as one process would (unbiased variance, momentum or cumulative average).
    It holds the replaced layer's own parameters and buffers under the same names (the state_dict is
    unchanged) and its multi-step layout: ``step_mode="m"`` folds ``[T, B, ...]`` into ``[T*B, ...]``."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
        self.weight, self.bias = norm.weight, norm.bias
        self.running_mean, self.running_var = norm.running_mean, norm.running_var
        self.num_batches_tracked = norm.num_batches_tracked
        self.step_mode = getattr(norm, "step_mode", "s")
        self.train(norm.training)

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if self.step_mode == "m":
            return self._normalize(x.flatten(0, 1)).view(x.shape)
        return self._normalize(x)

    def _normalize(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not self.training and self.running_mean is not None:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.new_full((1,), x.numel() // max(1, x.shape[1]))
        sums = sum_across(torch.cat([x.sum(dims), count]))
        total = sums[-1]
        mean = sums[:-1] / total
        centered = x - mean.view(shape)
        var = sum_across(centered.square().sum(dims)) / total
        y = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.weight is not None:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                unbiased = var.detach() * (total / (total - 1).clamp(min=1))
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        return y


@contextmanager
def global_batchnorm(net: nn.Module) -> Iterator[None]:
    """While training over several processes, every BatchNorm of ``net`` normalises with the global batch's
    statistics (:class:`GlobalBatchNorm` in its place); the layers are put back on exit, holding the trained
    values. A no-op in a single process. Another BatchNorm variant (e.g. threshold-dependent BN) is refused."""
    if world() == 1:
        yield
        return
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    known = syncable()
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if not isinstance(child, nn.modules.batchnorm._BatchNorm):
                continue
            if type(child) not in known:
                raise ConfigError(f"{type(child).__name__} ({name}) cannot share batch statistics across "
                                  f"processes; train this model in one process")
            swapped.append((parent, name, child))
    try:
        for parent, name, child in swapped:
            setattr(parent, name, GlobalBatchNorm(child))
        yield
    finally:
        for parent, name, child in swapped:
            standin = getattr(parent, name)
            child.momentum = standin.momentum
            child.train(standin.training)
            setattr(parent, name, child)


def broadcast_state(net: nn.Module) -> None:
    """Every process starts from the main process's parameters and buffers (models built with another seed
    or device state would otherwise drift apart from the first step)."""
    if world() == 1:
        return
    with torch.no_grad():
        for tensor in net.state_dict().values():
            dist.broadcast(tensor, 0)


def sum_gradients(params: Sequence[nn.Parameter]) -> None:
    """Sum each parameter's gradient over the processes (one all-reduce). A parameter gets a gradient when
    any process gave it one (as one process over the whole batch would); one that none did keeps ``None``,
    so that the optimizer skips it as it would in one process."""
    if world() == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    had = torch.tensor([float(p.grad is not None) for p in params], dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([*(g.reshape(-1) for g in grads), had])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(p)
        offset += g.numel()
    for p, flag in zip(params, flat[offset:].tolist()):
        if flag == 0:
            p.grad = None


def sum_numbers(numbers: Sequence[float]) -> list[float]:
    """Each number summed over the processes, in double precision (``numbers`` in a single process)."""
    if world() == 1:
        return list(numbers)
    tensor = torch.tensor(numbers, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()
