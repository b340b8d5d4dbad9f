"""Scale-and-fire neuron (SFN, "One-Timestep is Enough"; kind ``sfn``): non-uniform thresholds.

Ascending thresholds ``e_1 < … < e_N`` (anywhere on the real line: negative ones form the
negative branch), integer output codes ``c_0 ≤ c_1 ≤ … ≤ c_N`` and the real value ``u`` of
one code unit::

    m(t) = v(t-1) + I(t);   k(t) = #{i : e_i ≤ m(t)};   out(t) = u·c_k(t);   v(t) = m(t) - out(t)

The graded spike carries the integer ``c_k`` (a synapse multiplies it by ``u·W``). Uniform
``e_i = (i - 1/2)·θ``, ``c_i = i``, ``u = θ`` with ``v(0) = 0`` is the MTN, shifted by the
constant θ/2 in v. ``n2c.snn.convert`` places the thresholds from the measured activation
distribution and scales them by the SFN scale factor.

Integer form (per step, ``b`` the bias; ``U`` the integer potential of one code unit)::

    m = v + I + b;   c = codes[#{e_i ≤ m}];   v = clamp24(m - c·U);   send c

Quantization: edges and U at the layer scale; they must stay ascending and U ≥ 1.
NIR: ``n2c.neuron = scale_and_fire`` with ``n2c.sfn_edges`` and ``n2c.sfn_codes``.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from n2c.errors import NIRFormatError, QuantizationError
from n2c.fixed_point import LOIHI, IntegerFormat, StateClamp, to_signed
from n2c.neurons.kind import NeuronKind, largest_magnitude
from n2c.neurons.multi_threshold import KIND as MULTI_THRESHOLD


def step(v, current, edges, codes, unit):
    """One step. Returns ``(code, v_next)`` with ``code = c_k``, ``k = #{i: e_i ≤ m}``; the output
    is ``unit·code`` and ``v_next = m - unit·code`` (numpy or torch)."""
    if isinstance(v, torch.Tensor) or isinstance(current, torch.Tensor):
        return step_torch(v, current, edges, codes, unit)
    m = v + current
    code = np.asarray(codes)[np.searchsorted(np.asarray(edges), m, side="right")]
    return code, m - unit * code


def step_torch(v: torch.Tensor, current: torch.Tensor, edges: torch.Tensor, codes: torch.Tensor,
               unit: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`step` in TorchScript-able torch ops."""
    m = v + current
    code = codes[torch.searchsorted(edges, m.contiguous(), right=True)]
    return code, m - unit * code


class ScaleAndFire(NeuronKind):
    name = "sfn"
    nir_name = "scale_and_fire"

    def nir_threshold(self, module):
        """The first positive SFN threshold (1 when there is none)."""
        edges = module.edges[module.edges > 0]
        return np.float32(float(edges[0]) if edges.numel() else 1.0)

    def default_v_init(self, theta):
        return 0.0

    def step(self, neuron, state, current, clamp: StateClamp):
        code, v = step(state["v"] + neuron.bias, current, neuron.edges, neuron.codes, neuron.code_value)
        state["v"] = clamp(v)
        return code

    def message_range(self, neuron, fmt: IntegerFormat = LOIHI):
        return int(np.min(neuron.codes)), int(np.max(neuron.codes))

    def float_bound(self, neuron, current_bound, fmt: IntegerFormat = LOIHI):
        """|v| ≤ 2^23, so |m| ≤ 2^23 + |I| + |b| and |m - unit·code| ≤ |m| + unit·max|code|; the
        edges m is compared with must be exact too."""
        return (fmt.state_max + 1 + current_bound + largest_magnitude(neuron.bias)
                + max(largest_magnitude(neuron.edges), 1) + int(neuron.code_value) * largest_magnitude(neuron.codes))

    def check(self, neuron, fmt: IntegerFormat = LOIHI) -> None:
        super().check(neuron, fmt)
        edges, codes = np.asarray(neuron.edges), np.asarray(neuron.codes)
        if codes.shape != (edges.size + 1,) or (np.diff(edges) <= 0).any() or neuron.code_value < 1:
            raise QuantizationError(f"neuron '{neuron.name}': an SFN needs N ascending thresholds, N+1 codes and a "
                                    "code value ≥ 1; re-quantize the layer")
        if np.abs(codes).max() > fmt.state_max or np.abs(edges).max() > fmt.state_max:
            raise QuantizationError(f"neuron '{neuron.name}': SFN codes or thresholds exceed {fmt.state_bits} bits; "
                                    "use fewer levels")

    def quantize(self, layer, neuron, scale, fmt: IntegerFormat = LOIHI) -> dict:
        MULTI_THRESHOLD.quantize_threshold(layer, neuron, scale, fmt)
        neuron.edges = to_signed(layer.edges * scale, fmt.state_bits, layer.name, "the SFN thresholds")
        neuron.codes = layer.codes.astype(np.int64)
        unit = float(np.unique(layer.spike_value)[0])
        neuron.code_value = int(to_signed(np.array(unit * scale), fmt.state_bits, layer.name, "the SFN code unit"))
        if neuron.code_value < 1 or (np.diff(neuron.edges) <= 0).any():
            raise QuantizationError(f"layer '{layer.name}': SFN thresholds collapse at scale {scale:g}")
        return MULTI_THRESHOLD.threshold_summary(neuron, layer.name)

    def run_float(self, layer, v, x, timesteps):
        out = np.empty_like(x)
        for t in range(len(x)):
            k, v = step(v, x[t], layer.edges, layer.codes, layer.spike_value)
            out[t] = k * layer.spike_value
        return out, v

    def nir_metadata(self, module) -> dict:
        return {"n2c.neuron": self.nir_name, "n2c.sfn_edges": module.edges.detach().cpu().numpy().astype(np.float64),
                "n2c.sfn_codes": module.codes.detach().numpy().astype(np.int64)}

    def read_nir(self, layer, meta, array) -> None:
        edges = array("n2c.sfn_edges").reshape(-1)
        codes = array("n2c.sfn_codes").reshape(-1)
        if edges.size < 1 or codes.size != edges.size + 1 or (np.diff(edges) <= 0).any() \
                or (np.diff(codes) < 0).any() or (codes != np.round(codes)).any() or (np.abs(codes) >= 2 ** 31).any():
            raise NIRFormatError(f"IF node '{layer.name}': n2c.sfn_edges must ascend and n2c.sfn_codes be N+1 "
                                 "non-decreasing integers (below 2**31)")
        layer.edges, layer.codes = edges, codes.astype(np.int64)
        layer.max_spikes, layer.min_spikes = int(max(codes.max(), 0)), int(max(-codes.min(), 0))


KIND = ScaleAndFire()
