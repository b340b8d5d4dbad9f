"""The spiking network in torch: float simulation with the reference semantics.

Tensors inside a spiking graph are laid out ``[T·B, ...]``: synapse layers
(Conv2d, Linear, AvgPool2d, Flatten, additions) act on every step at once,
because they are linear and per-step; neurons view their input as
``[T, B, ...]`` and step through time with :func:`n2c.neurons.multi_threshold_step`.
Direct encoding: the analog image is fed unchanged at every step. Readout:
the output of the last layer averaged over the T steps.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from n2c.neurons import multi_threshold_step


class MultiThresholdIF(nn.Module):
    """IF neuron with reset by subtraction, up to ``max_spikes`` spikes per step.

    Parameters (see ``n2c.neurons``): ``threshold`` θ, ``max_spikes`` K,
    ``v_init`` v(0) (default θ/2, the optimal initial potential), ``timesteps`` T.
    Output per step: θ·k(t), a graded spike of k units.
    """

    def __init__(self, threshold: torch.Tensor | float, max_spikes: int, timesteps: int,
                 v_init: torch.Tensor | float | None = None):
        super().__init__()
        threshold = torch.as_tensor(threshold, dtype=torch.float32).detach().clone()
        if (threshold <= 0).any():
            raise ValueError("neuron thresholds must be positive")
        self.register_buffer("threshold", threshold)
        self.register_buffer("v_init", threshold / 2 if v_init is None
                             else torch.as_tensor(v_init, dtype=torch.float32).detach().clone())
        self.max_spikes = int(max_spikes)
        self.timesteps = int(timesteps)
        self.last_counts: torch.Tensor | None = None  # [T, B, ...] spike counts of the last call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.reshape(self.timesteps, -1, *x.shape[1:])
        v = self.v_init.expand_as(steps[0])
        counts = []
        for t in range(self.timesteps):
            k, v = multi_threshold_step(v, steps[t], self.threshold, self.max_spikes)
            counts.append(k)
        self.last_counts = torch.stack(counts)
        return (self.last_counts * self.threshold).reshape(x.shape)

    def extra_repr(self) -> str:
        return (f"threshold={self.threshold.flatten()[:1].item():.4g}{'…' if self.threshold.numel() > 1 else ''}, "
                f"max_spikes={self.max_spikes}, timesteps={self.timesteps}")


class SpikingNetwork(nn.Module):
    """A canonical fx graph whose activations are spiking neurons, run for T steps."""

    def __init__(self, graph: fx.GraphModule, timesteps: int):
        super().__init__()
        self.graph_module = graph
        self.timesteps = int(timesteps)

    def neurons(self) -> dict[str, MultiThresholdIF]:
        return {name: m for name, m in self.graph_module.named_modules() if isinstance(m, MultiThresholdIF)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over T of the last layer's output for a batch ``x`` of shape (B, ...)."""
        batch = x.shape[0]
        steps = x.unsqueeze(0).expand(self.timesteps, *x.shape).reshape(self.timesteps * batch, *x.shape[1:])
        out = self.graph_module(steps)
        return out.reshape(self.timesteps, batch, *out.shape[1:]).mean(dim=0)
