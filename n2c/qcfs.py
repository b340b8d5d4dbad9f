"""QCFS activation (Bu et al., ICLR 2022): quantization clip-floor-shift.

    h(z) = λ · clip(floor(z·L/λ + 1/2), 0, L) / L

λ is a trainable threshold (one scalar per layer), L the number of levels, and
the shift 1/2 makes the expected conversion error zero. The floor passes the
gradient straight through. Written as θ·k with θ = λ/L and k the count of
``n2c.neurons.qcfs_count`` so that the converted one-step spiking neuron
computes the same floats.
"""

from __future__ import annotations

import torch
from torch import nn

from n2c.neurons import qcfs_count


class _FloorSTE(torch.autograd.Function):
    """floor in the forward pass, identity gradient in the backward pass."""

    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class QCFS(nn.Module):
    """Clip-floor-shift activation with trainable threshold ``lam`` and ``levels`` L.

    ``levels`` is stored as a buffer so a checkpoint (state_dict, TorchScript or
    torch.export file) carries it together with λ.
    """

    def __init__(self, levels: int = 8, lam: float = 4.0):
        super().__init__()
        if levels < 1:
            raise ValueError(f"QCFS levels must be >= 1, got {levels}")
        self.lam = nn.Parameter(torch.tensor(float(lam)))
        self.register_buffer("levels", torch.tensor(int(levels)))

    @property
    def threshold(self) -> torch.Tensor:
        """Per-level step θ = λ/L (the spiking neuron's threshold)."""
        return self.lam / self.levels

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        levels = int(self.levels)
        theta = self.lam / levels
        if torch.is_grad_enabled() and (z.requires_grad or self.lam.requires_grad):
            k = torch.clamp(_FloorSTE.apply((theta / 2 + z) / theta), 0, levels)
        else:
            k = qcfs_count(z, theta, levels)
        return k * theta

    def extra_repr(self) -> str:
        return f"levels={int(self.levels)}, lam={float(self.lam):.4g}"
