"""Cross-replica (synchronized) BatchNorm for CPU/gloo and CUDA/NCCL.

``torch.nn.SyncBatchNorm`` only accepts CUDA modules, so CPU multi-process runs
(tests, small experiments) would silently train with per-rank statistics. This
module computes the batch statistics over the union of all ranks' batches with
plain tensor ops plus a differentiable all-reduce, so it runs on any backend
and its gradients match single-process BatchNorm on the concatenated batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["CrossReplicaBatchNorm", "convert_to_cross_replica_bn", "local_batch_stats"]


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is again a sum over ranks.

    The global loss is the sum of the per-rank losses and every rank consumes
    the reduced tensor, so d(loss)/d(local input) is the sum of all ranks'
    upstream gradients. Written out (rather than using
    ``torch.distributed.nn.functional.all_reduce``) because that one emits a
    FutureWarning on every call.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor, group) -> Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _AllReduceSum.apply(grad, ctx.group), None


class CrossReplicaBatchNorm(_BatchNorm):
    """Drop-in for ``nn.BatchNorm1d/2d/3d`` whose training statistics span all ranks.

    Accepts any input of shape ``(B, C, *spatial)``. Ranks may have different
    local batch sizes (including zero): counts are reduced, not assumed.
    Outside training, without an initialized process group, with world size 1,
    or inside :func:`local_batch_stats`, it is exactly ``F.batch_norm``.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: dist.ProcessGroup | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype
        )
        self.process_group = process_group
        # Toggled by `local_batch_stats`; plain attribute so it is not saved in state_dict.
        self.sync = True

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (B, C, *spatial), got {input.dim()}D")

    def _needs_sync(self) -> bool:
        return (
            self.training
            and self.sync
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size(self.process_group) > 1
        )

    def forward(self, input: Tensor) -> Tensor:
        if not self._needs_sync():
            return super().forward(input)  # torch's own F.batch_norm path, bit for bit
        self._check_input_dim(input)

        # Same momentum bookkeeping as _BatchNorm.forward (momentum=None -> cumulative average).
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)

        # Statistics in >= float32: bf16/fp16 sums over B*H*W elements lose too much.
        x = input.to(torch.promote_types(input.dtype, torch.float32))  # (B, C, *S)
        dims = [0, *range(2, x.dim())]  # every axis except channels
        shape = [1, -1] + [1] * (x.dim() - 2)  # broadcast (C,) against (B, C, *S)

        # Two-pass (global mean, then centred squares) instead of sum/sum-of-squares:
        # E[x^2] - E[x]^2 cancels catastrophically when |mean| >> std.
        # One collective carries both the sums and the element count.
        count = x.new_full((1,), float(x.numel() // x.size(1)))  # (1,) elements per channel here
        sum_count = _AllReduceSum.apply(torch.cat([x.sum(dims), count]), self.process_group)  # (C+1,)
        n = sum_count[-1]  # () global elements per channel, identical on all ranks
        mean = sum_count[:-1] / n  # (C,)
        centred = x - mean.view(shape)  # (B, C, *S)
        sq_dev = _AllReduceSum.apply((centred * centred).sum(dims), self.process_group)  # (C,)
        var = sq_dev / n  # (C,) biased, used for normalisation like torch

        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                # Buffers track the unbiased variance, matching torch.
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                # clamp instead of checking n > 1: n.item() would stall the GPU stream every layer.
                unbiased = sq_dev / (n - 1).clamp_min(1)  # (C,)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)

        out = centred * torch.rsqrt(var + self.eps).view(shape)  # (B, C, *S)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


@contextlib.contextmanager
def local_batch_stats(module: nn.Module) -> Iterator[nn.Module]:
    """Use per-rank batch statistics (no collective) inside the block.

    Lets a single rank run the model in train mode, e.g. sampling on rank 0,
    without deadlocking on an all-reduce the other ranks never join. Running
    stats, if tracked, are then updated from that rank's batch alone.
    """
    bns = [m for m in module.modules() if isinstance(m, CrossReplicaBatchNorm)]
    previous = [m.sync for m in bns]  # restore, not force True, so nesting works
    for m in bns:
        m.sync = False
    try:
        yield module
    finally:
        for m, s in zip(bns, previous):
            m.sync = s


_TORCH_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def convert_to_cross_replica_bn(
    module: nn.Module, process_group: dist.ProcessGroup | None = None
) -> nn.Module:
    """Recursively swap torch BatchNorm layers for CrossReplicaBatchNorm, keeping state.

    Returns the new root (which differs from ``module`` if the root itself is a
    BatchNorm), like ``nn.SyncBatchNorm.convert_sync_batchnorm``.
    """
    out = module
    if isinstance(module, _TORCH_BN) and not isinstance(module, CrossReplicaBatchNorm):
        out = CrossReplicaBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            process_group=process_group,
        )
        # Share the Parameter/buffer objects (as torch's converter does): requires_grad,
        # dtype, device and any optimizer already holding them all stay valid.
        if module.affine:
            out.weight = module.weight
            out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_to_cross_replica_bn(child, process_group))
    return out
