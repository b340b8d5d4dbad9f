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
        # k = clip(floor((θ/2 + z)/θ), 0, L): n2c.neurons.qcfs_count, spelled out in torch
        # ops so TorchScript can compile it. floor(q) + (q - q) keeps the forward value
        # exactly floor(q) while the gradient passes straight through.
        q = (theta / 2 + z) / theta
        k = torch.clamp(torch.floor(q).detach() + (q - q.detach()), 0, levels)
        return k * theta

    def extra_repr(self) -> str:
        return f"levels={int(self.levels)}, lam={float(self.lam):.4g}"
