"""Model FLOPs of one training step, counted from the layers that actually ran.

Convention (as ``torch.utils.flop_counter``): a multiply-add is 2 FLOPs; only the matmul and
convolution work is counted (bias adds, activations and the optimizer are left out, as usual for MFU).
Per layer call with forward cost F: the forward is F, the weight gradient is F, and the input gradient
is F only when the layer's input needs a gradient (the encoder's first layer sees the data, which does
not; the decoder's first layer sees z, which does). The common shortcut "3 x forward" over-counts by
that first layer (12% for the reference MLP VAE); ``StepFlops.three_x_forward`` keeps it for comparison.

Layers are found with forward hooks while the real objective runs, so sample dimensions (IWAE's K
decoder passes per datapoint) and second decoder passes (DReG) are counted as they happen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vaezoo.core.errors import VaezooError


def _linear(m: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> int:
    rows = x.numel() // m.in_features
    return 2 * rows * m.in_features * m.out_features


def _conv(m: nn.Conv2d, x: torch.Tensor, y: torch.Tensor) -> int:
    # Every output position applies the whole kernel (padding counted, as flop_counter does).
    batch, spatial_out = y.shape[0], math.prod(y.shape[2:])
    return 2 * batch * spatial_out * m.out_channels * (m.in_channels // m.groups) * math.prod(m.kernel_size)


def _conv_transpose(m: nn.ConvTranspose2d, x: torch.Tensor, y: torch.Tensor) -> int:
    # Every input position scatters one kernel into the output.
    batch, spatial_in = x.shape[0], math.prod(x.shape[2:])
    return 2 * batch * spatial_in * m.in_channels * (m.out_channels // m.groups) * math.prod(m.kernel_size)


# layer type -> forward FLOPs of one call, from the module and its input/output tensors
LAYER_FLOPS: dict[type[nn.Module], Callable[[nn.Module, torch.Tensor, torch.Tensor], int]] = {
    nn.Linear: _linear,
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.Conv3d: _conv,
    nn.ConvTranspose1d: _conv_transpose,
    nn.ConvTranspose2d: _conv_transpose,
    nn.ConvTranspose3d: _conv_transpose,
}


@dataclass(frozen=True)
class LayerCall:
    """One call of a counted layer: its name, forward FLOPs, and whether its input needed a gradient."""

    name: str
    forward: int
    input_grad: bool


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one forward (+ backward) pass over a batch of ``batch`` datapoints."""

    calls: tuple[LayerCall, ...]
    batch: int

    @property
    def forward(self) -> int:
        return sum(c.forward for c in self.calls)

    @property
    def backward(self) -> int:
        """Weight gradients always, input gradients where the input needed one."""
        return sum(c.forward * (2 if c.input_grad else 1) for c in self.calls)

    @property
    def train(self) -> int:
        return self.forward + self.backward

    @property
    def three_x_forward(self) -> int:
        return 3 * self.forward

    @property
    def train_per_sample(self) -> float:
        return self.train / self.batch


def count_calls(modules: nn.Module, run: Callable[[], object]) -> tuple[LayerCall, ...]:
    """Run ``run()`` with hooks on every countable layer inside ``modules``; return the calls in order."""
    calls: list[LayerCall] = []
    handles = []
    for name, mod in modules.named_modules():
        rule = LAYER_FLOPS.get(type(mod))
        if rule is None:
            continue

        def hook(m, inputs, output, name=name, rule=rule):
            x = inputs[0]
            calls.append(LayerCall(name, int(rule(m, x, output)), bool(x.requires_grad)))

        handles.append(mod.register_forward_hook(hook))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return tuple(calls)


def training_step_flops(
    model: nn.Module, loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> StepFlops:
    """Count the FLOPs of one training step of ``loss_fn(x)`` (forward and backward) on ``model``'s layers."""
    if len(x) == 0:
        raise VaezooError("cannot count FLOPs on an empty batch")
    calls = count_calls(model, lambda: loss_fn(x))
    if not calls:
        raise VaezooError(f"no countable layers ({', '.join(t.__name__ for t in LAYER_FLOPS)}) ran in this model")
    return StepFlops(calls, len(x))


def flop_counter_total(run: Callable[[], object]) -> int:
    """Cross-check: what ``torch.utils.flop_counter.FlopCounterMode`` counts while ``run()`` executes."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return int(counter.get_total_flops())
