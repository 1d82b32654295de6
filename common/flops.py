"""What a training step costs in floating-point operations, counted by torch.utils.flop_counter (days 22 and 30).

FlopCounterMode counts matrix multiplications and convolutions, 2 FLOPs per multiply-add, forward and backward;
elementwise work (activations, norms, softmax, the loss) counts as free, as in Peebles & Xie's Gflops. Counting runs
under the math backend of F.scaled_dot_product_attention: torch's fused CPU attention kernel is missing from the
counter's table (its QKᵀ and AV would count as 0), while the math backend does the same two products as bmm calls,
so a model counts the same on every device.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry


def flops(step: Callable[[], object]) -> int:
    """The FLOPs of running step() (say, a forward and a backward pass)."""
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        step()
    return counter.get_total_flops()


def training_flops(net: torch.nn.Module, loss_fn: Callable, x0: torch.Tensor, y: torch.Tensor | None) -> float:
    """FLOPs per image of one training step: forward and backward of loss_fn(net, x0, y, generator) on the batch
    x0 (B, ...), the gradients then dropped. About 3 × the forward's: the backward multiplies each matrix product's
    output gradient by both its operands (only the weights' gradient, where the input is data)."""
    total = flops(lambda: loss_fn(net, x0, y, torch.Generator().manual_seed(0)).backward())
    net.zero_grad(set_to_none=True)
    return total / len(x0)


class _Counter(TorchDispatchMode):
    """flops()' count (the same table of products, flop_registry) without FlopCounterMode's module hooks,
    which refuse a step that calls torch.autograd.grad inside (DDGAN's R1 penalty)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


def flops_with_grad(step: Callable[[], object]) -> int:
    """The FLOPs of running step(), which may differentiate inside (a gradient penalty): flops()'s count."""
    with _Counter() as counter, sdpa_kernel(SDPBackend.MATH):
        step()
    return counter.total
