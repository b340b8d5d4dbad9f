"""What every neuron kind provides, the window rule they share, and the array helpers of
their kernels (numpy and torch alike).

A kind is one object (a :class:`NeuronKind` subclass, registered in :mod:`n2c.neurons`)
with everything n2c needs to know about that neuron, wherever it runs:

* its equation (the module docstring) and step kernels: torch for the SNN modules,
  numpy for the float and integer simulators and Lava's process models;
* its integer state and how a sample window starts (:meth:`NeuronKind.initial_state`);
* the window rule under Lava timing (:meth:`NeuronKind.stream_step`);
* its quantization rule (:meth:`NeuronKind.quantize`), checks against the integer
  format (:meth:`NeuronKind.check`), the range of the messages it sends, and its
  ``n2c.*`` NIR metadata.

The parameters of a neuron are read as attributes of the object passed in: an
``IntNeuron`` of the integer IR (``backends.quantize``), a ``NeuronLayer`` of the layer IR,
a torch module, or a Lava process model, which all name them alike (threshold, bias,
v_init, max_spikes, min_spikes, edges, codes, code_value, du, dv).

Window rule (Lava timing). Samples stream back to back, T steps each; a neuron whose
input lags the source by ``d`` steps is at position ``(t - d) % T`` of its sample window
at global step ``t`` and returns to its initial state before its update at position 0.
"""

from __future__ import annotations

import numpy as np
import torch

from n2c.errors import QuantizationError
from n2c.fixed_point import EXACT_FLOAT64, LOIHI, IntegerFormat, StateClamp


def floor_divide(m, theta):
    """floor(m / θ): of the rounded float quotient for floats (torch or numpy, so both agree
    with the QCFS module bit for bit), the exact floor division for integers."""
    if isinstance(m, torch.Tensor):
        return torch.floor(m / theta)
    if np.issubdtype(np.result_type(m, theta), np.integer):
        # float64 division is exact here and faster than integer division: for integers with
        # |m| < 2^53 and θ ≥ 1 the rounding error |m/θ|·2^-53 < 1/θ cannot cross an integer
        q = np.true_divide(m, theta)
        if np.abs(q).max(initial=0) * np.max(np.abs(theta), initial=1) >= EXACT_FLOAT64:
            return np.floor_divide(m, theta)
        return (np.floor(q, out=q) if isinstance(q, np.ndarray) else np.floor(q)).astype(np.int64)
    return np.floor(np.divide(m, theta))


def clip(x, lo, hi):
    if isinstance(x, torch.Tensor):
        if isinstance(lo, torch.Tensor) != isinstance(hi, torch.Tensor):  # torch.clamp takes two of a kind
            lo, hi = (torch.as_tensor(b, dtype=x.dtype) for b in (lo, hi))
        return torch.clamp(x, lo, hi)
    return np.clip(x, lo, hi)


def largest_magnitude(values) -> int:
    """max |value| of a parameter (0 for none), as a Python integer: the terms of ``float_bound``."""
    return int(np.abs(np.asarray(values)).max(initial=0))


def zeros_like(x):
    return torch.zeros_like(x) if isinstance(x, torch.Tensor) else np.zeros_like(x)


def empty_like(x):
    return torch.empty_like(x) if isinstance(x, torch.Tensor) else np.empty_like(x)


def window_position(t: int, depth: int, timesteps: int) -> int:
    """Position of global step ``t`` in the sample window of a neuron whose input has depth ``depth``."""
    return (t - depth) % timesteps


def per_neuron(values, shape: tuple[int, ...], like=None):
    """A parameter broadcast to the layer's shape, int64; or, when ``like`` is a tensor (the
    reference's exact float runs, ``backends.reference.plan``), a tensor of its dtype that
    broadcasts to the shape."""
    if isinstance(like, torch.Tensor):  # not copied: broadcastable to ``shape`` (kernels replace, never write, state)
        return torch.as_tensor(values, dtype=like.dtype)
    return np.broadcast_to(np.asarray(values, dtype=np.int64), shape).copy()


class NeuronKind:
    """Base of the neuron kinds. ``name`` is the key in the integer IR and reports; ``nir_name``
    the value of ``n2c.neuron`` in NIR (None: written as a standard NIR node)."""

    name: str = ""
    nir_name: str | None = None
    spiking: bool = True  # sends spikes (counts, codes); False: sends its potential
    state: tuple[str, ...] = ("v",)  # integer state variables
    windows_late: int = 0  # whole sample windows between input and output

    def output_delay(self, timesteps: int) -> int:
        """Steps between a neuron's input and its output under Lava timing."""
        return self.windows_late * timesteps

    # --- integer arithmetic -----------------------------------------------------------------
    def initial_state(self, neuron, shape: tuple[int, ...], like=None) -> dict:
        """State at the start of a sample window: v = v(0) (:meth:`v_start`), the rest 0; int64,
        or tensors of ``like``'s dtype when ``like`` is a tensor."""
        state = {name: per_neuron(0, shape, like) for name in self.state}
        state["v"] = per_neuron(self.v_start(neuron), shape, like)
        return state

    def float_bound(self, neuron, current_bound: int) -> int | None:
        """The largest magnitude any value of one :meth:`step` can take when |current| ≤
        ``current_bound``: the reference runs the kind's kernel on floats holding integers when
        this is below the float type's exact range (``backends.reference.plan``). None: the
        kernel runs on int64 only."""
        return None

    def v_start(self, neuron):
        return neuron.v_init

    def step(self, neuron, state: dict, current: np.ndarray, clamp: StateClamp) -> np.ndarray:
        """Advance ``state`` by one step with summed synaptic input ``current`` (without the
        bias); return the message sent. Integer arithmetic, int64."""
        raise NotImplementedError

    def run_window(self, neuron, current: np.ndarray, clamp: StateClamp) -> tuple[np.ndarray, dict]:
        """Zero-delay run of one sample window: ``current`` (T, B, *shape) → messages (T, B, *shape)
        and the final state."""
        state = self.initial_state(neuron, current.shape[1:], like=current)
        if len(current) == 1:  # one step (T = 1): no copy into a window array
            return self.step(neuron, state, current[0], clamp)[None], state
        out = empty_like(current)
        for t in range(len(current)):
            out[t] = self.step(neuron, state, current[t], clamp)
        return out, state

    def stream_step(self, neuron, state: dict, current: np.ndarray, t: int, depth: int, timesteps: int,
                    clamp: StateClamp) -> np.ndarray:
        """One global step under Lava timing: the window rule, then :meth:`step`. ``state`` is
        updated in place."""
        if window_position(t, depth, timesteps) == 0:
            state.update(self.initial_state(neuron, current.shape))
        return self.step(neuron, state, current, clamp)

    def message_range(self, neuron, fmt: IntegerFormat = LOIHI) -> tuple[int, int]:
        """Smallest and largest integer the neuron sends."""
        raise NotImplementedError

    def check(self, neuron, fmt: IntegerFormat = LOIHI) -> None:
        """Raise a QuantizationError naming what of this neuron the integer format cannot hold."""
        for what in ("bias", "threshold", "v_init"):
            values = getattr(neuron, what, None)
            if values is not None and np.abs(np.asarray(values)).max(initial=0) > fmt.state_max:
                raise QuantizationError(f"neuron '{neuron.name}': {what} exceeds Loihi's {fmt.state_bits}-bit state; "
                                        "quantize the layer at a smaller scale")

    def quantize(self, layer, neuron, scale: float, fmt: IntegerFormat = LOIHI) -> dict:
        """Fill the integer parameters of ``neuron`` from the float layer at scale ``scale``;
        return what the quantization summary reports."""
        return {}

    # --- float -------------------------------------------------------------------------------
    def run_float(self, layer, v: np.ndarray, x: np.ndarray, timesteps: int) -> tuple[np.ndarray, np.ndarray]:
        """Float run of the layer IR's neuron over the steps of ``x`` (S, B, *shape) from potential
        ``v``; returns (real outputs (S, B, *shape), v)."""
        raise NotImplementedError

    # --- NIR ---------------------------------------------------------------------------------
    def nir_threshold(self, module):
        """NIR's ``v_threshold`` of a torch neuron module: its θ (numpy float32)."""
        return module.threshold.detach().cpu().numpy().astype(np.float32)

    def default_v_init(self, theta):
        """v(0) of a NIR node that does not state ``n2c.v_init``: the optimal θ/2."""
        return theta / 2

    def nir_metadata(self, module) -> dict:
        """The kind's own ``n2c.*`` keys for a torch neuron module."""
        return {}

    def read_nir(self, layer, meta: dict, array) -> None:
        """Read the kind's own ``n2c.*`` keys into a layer IR ``NeuronLayer``; ``array(key)`` gives
        a validated float array of a key or raises."""

    def __repr__(self) -> str:
        return f"<neuron kind {self.name}>"
