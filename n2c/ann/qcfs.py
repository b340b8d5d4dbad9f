"""Quantization layers trained in the ANN in place of ReLU.

QCFS (Bu et al., ICLR 2022), quantization clip-floor-shift:

    h(z) = λ · clip(floor(z·L/λ + 1/2), 0, L) / L

Signed QCFS (the quantizer of polarity multi-spike mapping, PMSM), which keeps
the negative values a ReLU would drop:

    q(z) = λ · clip(floor(z·L/λ + 1/2), -L, L) / L

λ is a trainable threshold, one scalar per layer or one per channel (a tensor
shaped to broadcast over the activation without its batch dimension, e.g.
(C, 1, 1)); L is the number of levels. The floor passes the gradient straight
through. Both are written as θ·k with θ = λ/L and k the count of
``n2c.neurons.multi_threshold.qcfs_count`` / ``n2c.neurons.polarity.signed_qcfs_count`` so that the converted one-step
spiking neuron computes the same floats.
"""

from __future__ import annotations

import torch
from torch import nn

from n2c.neurons.multi_threshold import fire_torch


def _lam_tensor(lam) -> torch.Tensor:
    lam = torch.as_tensor(lam, dtype=torch.float32).detach().clone()
    if (lam <= 0).any():
        raise ValueError("QCFS thresholds λ must be positive")
    return lam


class QCFS(nn.Module):
    """Clip-floor-shift activation with trainable threshold ``lam`` and ``levels`` L.

    ``levels`` is stored as a buffer so a checkpoint (state_dict, TorchScript or
    torch.export file) carries it together with λ.
    """

    def __init__(self, levels: int = 8, lam: float | torch.Tensor = 4.0):
        super().__init__()
        if int(levels) < 1:
            raise ValueError(f"QCFS levels must be >= 1, got {levels}")
        self.lam = nn.Parameter(_lam_tensor(lam))
        self.register_buffer("levels", torch.tensor(int(levels)))

    @property
    def threshold(self) -> torch.Tensor:
        """Per-level step θ = λ/L (the spiking neuron's threshold)."""
        return self.lam / self.levels

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        levels = int(self.levels)
        theta = self.lam / levels
        # k = clip(floor((θ/2 + z)/θ), 0, L): the multi-threshold neuron's count after one step
        # from v_init = θ/2, the gradient passing straight through the floor
        return fire_torch(theta / 2 + z, theta, 0, levels, straight_through=True) * theta

    def extra_repr(self) -> str:
        lam = self.lam.detach()
        shown = f"{float(lam):.4g}" if lam.numel() == 1 else f"per-channel {tuple(lam.shape)}"
        return f"levels={int(self.levels)}, lam={shown}"


class SignedQCFS(QCFS):
    """Signed quantizer of PMSM: ``λ·clip(floor(z·L/λ + 1/2), -L, L)/L`` (2L+1 levels)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        levels = int(self.levels)
        theta = self.lam / levels
        # n2c.neurons.polarity.signed_qcfs_count (see QCFS.forward)
        lowest = int(-self.levels)  # negated before int(): torch.export cannot serialize a negated int
        return fire_torch(theta / 2 + z, theta, lowest, levels, straight_through=True) * theta
