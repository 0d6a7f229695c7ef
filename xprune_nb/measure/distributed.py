"""Data-parallel retraining with ``torchrun`` and DistributedDataParallel.

When a process is started by ``torchrun --nproc_per_node=N script.py`` (``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` are set), :func:`setup` starts the process group: gloo on CPU,
nccl on CUDA. Then:

* scoring and pruning run once, on rank 0; :func:`broadcast_study` sends the result (history
  and pruned weights) to the other ranks, which rebuild the same pruned architecture;
* :func:`xprune_nb.measure.training.train` (and so ``Study.retrain``) wraps the model in
  DistributedDataParallel: every rank draws the same shuffled global batch, keeps its shard
  (``batch[rank::world_size]``), and the gradients are averaged, so each update uses the whole
  global batch as a single process would; BatchNorm layers normalise over the global batch
  too (:func:`sync_batchnorm`), so a BatchNorm model trains as it would in one process;
* after training, rank 0's weights are broadcast, so every rank ends with rank 0's result.

Outside ``torchrun`` everything here is a no-op and ``world_size() == 1``.

Examples
--------
>>> from xprune_nb import distributed as dist
>>> dist.world_size(), dist.rank(), dist.is_main()
(1, 0, True)
"""

from __future__ import annotations

import os

import torch
import torch.distributed as tdist
from torch import nn

from ..core.errors import ConfigError

__all__ = ["setup", "teardown", "is_initialized", "launched_by_torchrun", "world_size", "rank",
           "local_rank", "is_main", "training_device", "broadcast_module",
           "all_reduce_sum", "barrier", "sync_batchnorm", "unsync_batchnorm"]

DEVICES = ("cpu", "cuda")
_device: torch.device | None = None


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables are present."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def is_initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def world_size() -> int:
    return tdist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return tdist.get_rank() if is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that scores, prunes and writes."""
    return rank() == 0


def setup(device: str = "cpu") -> torch.device:
    """Choose the training device and, under torchrun, start the process group.

    Parameters
    ----------
    device : {"cpu", "cuda"}
        ``cuda`` uses the GPU numbered ``LOCAL_RANK`` and the nccl backend; ``cpu`` uses gloo.

    Returns
    -------
    torch.device
        The device :func:`xprune_nb.measure.training.train` will use from now on.
    """
    global _device
    if device not in DEVICES:
        raise ConfigError.unknown_name("distributed.setup", "device", DEVICES, device)
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError.bad_value("distributed.setup", "device",
                                    "'cpu' (no CUDA device is available here)", device)
    if device == "cuda":
        torch.cuda.set_device(local_rank())
    if launched_by_torchrun() and not is_initialized():
        tdist.init_process_group("nccl" if device == "cuda" else "gloo")
    _device = torch.device("cuda", local_rank()) if device == "cuda" else torch.device("cpu")
    return _device


def teardown() -> None:
    """End the process group (if any); safe to call more than once."""
    global _device
    if is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()
    _device = None


def training_device() -> torch.device:
    """The device chosen by :func:`setup`; the GPU of this rank under nccl; else the CPU."""
    if _device is not None:
        return _device
    if is_initialized() and tdist.get_backend() == "nccl":
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def _comm_device() -> torch.device:
    # nccl moves only CUDA tensors; gloo only CPU ones
    return training_device() if is_initialized() and tdist.get_backend() == "nccl" else (
        torch.device("cpu"))


def barrier() -> None:
    if world_size() > 1:
        tdist.barrier()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum ``values`` over all ranks (returned unchanged in a single process)."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    tdist.all_reduce(t)
    return t.cpu().tolist()


@torch.no_grad()
def broadcast_module(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into ``model`` on every rank (in place).

    The architectures must already match (same pruned structure on every rank).
    """
    if world_size() == 1:
        return
    dev = _comm_device()
    for t in list(model.parameters()) + list(model.buffers()):
        buf = t.detach().to(dev).contiguous()
        tdist.broadcast(buf, src)
        t.copy_(buf.to(t.device))
    _refresh_masked(model)


def _refresh_masked(model: nn.Module) -> None:
    # a masked layer's ``weight`` is a plain tensor recomputed in a forward pre-hook; refresh it
    # now so that anything reading weights before the next forward sees the new values
    from ..models.mechanisms.masks import refresh_masked_weights

    refresh_masked_weights(model)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        tdist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        tdist.all_reduce(grad)
        return grad


def _synced_bn_forward(self, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over the global batch: statistics summed over ranks (differentiably), as
    ``nn.SyncBatchNorm`` does on GPUs; this version also runs on CPU with gloo."""
    if not self.training:
        return type(self).forward(self, x)
    all_reduce = _AllReduceSum.apply
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
    total = all_reduce(torch.cat([x.sum(dims), count]))
    n = total[-1]
    mean = total[:-1] / n
    # two passes (mean, then squared deviations) like the native kernel, for close agreement
    var = all_reduce((x - mean.view(shape)).pow(2).sum(dims)) / n
    if self.track_running_stats:
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                 else self.momentum)
            self.running_mean.mul_(1 - m).add_(mean.detach() * m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)) * m)
    y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
    if self.affine:
        y = y * self.weight.view(shape) + self.bias.view(shape)
    return y


def sync_batchnorm(model: nn.Module) -> list[nn.Module]:
    """Make every BatchNorm of ``model`` normalise over the global batch (all ranks); returns
    the modules changed, for :func:`unsync_batchnorm`. A no-op in a single process."""
    if world_size() == 1:
        return []
    import types

    changed = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in changed:
        m.forward = types.MethodType(_synced_bn_forward, m)
    return changed


def unsync_batchnorm(modules: list[nn.Module]) -> None:
    for m in modules:
        m.__dict__.pop("forward", None)


