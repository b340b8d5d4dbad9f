"""The spiking network in torch: float simulation with the reference semantics.

Tensors inside a spiking graph are laid out ``[T·B, ...]``: synapse layers
(Conv2d, Linear, AvgPool2d, Flatten, additions) act on every step at once,
because they are linear and per-step; neurons view their input as
``[T, B, ...]``. Direct encoding: the analog image is fed unchanged at every
step. Readout: the output of the last layer averaged over the T steps.

The neuron modules own the time loop and call the torch kernels of their kind
(:mod:`n2c.neurons`), which TorchScript compiles (a converted SNN is saved as a
TorchScript file). ``kind`` names the kind in the registry.
Buffers shaped to broadcast over one sample (e.g. (C, 1, 1)) give per-channel
thresholds.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from n2c import products
from n2c.neurons import multi_threshold, parallel, scale_and_fire


def _buffer(value, like: torch.Tensor | None = None) -> torch.Tensor:
    t = torch.as_tensor(value if value is not None else like, dtype=torch.float32)
    return t.detach().clone()


def _threshold_buffers(module: nn.Module, threshold, v_init, spike_value) -> None:
    """θ (> 0), v(0) (default θ/2) and the spike value (default θ) as buffers."""
    threshold = _buffer(threshold)
    if (threshold <= 0).any():
        raise ValueError("neuron thresholds must be positive")
    module.register_buffer("threshold", threshold)
    module.register_buffer("v_init", _buffer(v_init, threshold / 2))
    module.register_buffer("spike_value", _buffer(spike_value, threshold))


class MultiThresholdIF(nn.Module):
    """IF neuron with reset by subtraction: up to ``max_spikes`` positive and
    ``min_spikes`` negative spikes per step (:mod:`n2c.neurons.multi_threshold`).

    ``threshold`` θ, ``v_init`` v(0) (default θ/2, the optimal initial potential),
    ``spike_value`` the real value of one spike (default θ), ``timesteps`` T.
    Output per step: spike_value·k(t). IF: K=1; MTN: K=L at T=1; PMSM: min_spikes=K.
    """

    kind = multi_threshold.KIND.name

    def __init__(self, threshold, max_spikes: int, timesteps: int, v_init=None, min_spikes: int = 0,
                 spike_value=None):
        super().__init__()
        _threshold_buffers(self, threshold, v_init, spike_value)
        self.max_spikes = int(max_spikes)
        self.min_spikes = int(min_spikes)
        self.timesteps = int(timesteps)

    def counts(self, x: torch.Tensor) -> torch.Tensor:
        """Spike counts [T, B, ...] for input currents x [T·B, ...]."""
        steps = x.reshape([self.timesteps, -1] + list(x.shape[1:]))
        v = self.v_init.expand_as(steps[0])
        counts = []
        for t in range(self.timesteps):
            k, v = multi_threshold.step_torch(v, steps[t], self.threshold, self.max_spikes, self.min_spikes)
            counts.append(k)
        return torch.stack(counts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.counts(x) * self.spike_value).reshape(x.shape)

    def extra_repr(self) -> str:
        theta = self.threshold.flatten()
        return (f"threshold={theta[0].item():.4g}{'…' if theta.numel() > 1 else ''}, "
                f"spikes=[-{self.min_spikes}, {self.max_spikes}], timesteps={self.timesteps}")


class ParallelNeuron(nn.Module):
    """Parallel spiking neuron (:mod:`n2c.neurons.parallel`): layer-synchronous over T steps.

    ``n = clip(floor((Σ_t I(t) + v_init)/θ), 0, T)``, spikes at steps 0..n-1 (sorted),
    each of value ``spike_value``. ``v_init = θ/2 + T·ψ`` carries the DA-QCFS shift ψ;
    ``spike_value = θ + φ`` its amplitude correction (θ when uncalibrated).
    """

    kind = parallel.KIND.name

    def __init__(self, threshold, timesteps: int, v_init=None, spike_value=None):
        super().__init__()
        _threshold_buffers(self, threshold, v_init, spike_value)
        self.timesteps = int(timesteps)

    def counts(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.reshape([self.timesteps, -1] + list(x.shape[1:]))
        n = parallel.count_torch(steps.sum(dim=0), self.threshold, self.v_init, self.timesteps)
        return parallel.spikes_torch(n, self.timesteps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.counts(x) * self.spike_value).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold.flatten()[0].item():.4g}, timesteps={self.timesteps}"


class ScaleAndFire(nn.Module):
    """Scale-and-fire neuron (:mod:`n2c.neurons.scale_and_fire`): non-uniform thresholds
    ``edges`` (N,), integer output ``codes`` (N+1,), ``unit`` the real value of one code,
    reset by subtraction of the emitted value, ``v_init`` (default 0)."""

    kind = scale_and_fire.KIND.name

    def __init__(self, edges, codes, unit: float, timesteps: int, v_init=None):
        super().__init__()
        edges = _buffer(edges)
        codes = torch.as_tensor(codes, dtype=torch.float32)
        if edges.dim() != 1 or codes.shape != (edges.numel() + 1,) or not bool((edges[1:] > edges[:-1]).all()):
            raise ValueError("SFN needs N ascending thresholds and N+1 output codes")
        if not bool((codes[1:] >= codes[:-1]).all()) or not bool((codes == codes.round()).all()):
            raise ValueError("SFN output codes must be non-decreasing integers")
        if not unit > 0:
            raise ValueError("SFN code unit must be positive")
        self.register_buffer("edges", edges)
        self.register_buffer("codes", codes.detach().clone())
        self.register_buffer("unit", torch.tensor(float(unit)))
        self.register_buffer("v_init", _buffer(0.0 if v_init is None else v_init))
        self.timesteps = int(timesteps)

    @property
    def spike_value(self) -> torch.Tensor:
        return self.unit

    def counts(self, x: torch.Tensor) -> torch.Tensor:
        """Output codes [T, B, ...] (the integer each graded spike carries)."""
        steps = x.reshape([self.timesteps, -1] + list(x.shape[1:]))
        v = self.v_init.expand_as(steps[0])
        codes = []
        for t in range(self.timesteps):
            c, v = scale_and_fire.step_torch(v, steps[t], self.edges, self.codes, self.unit)
            codes.append(c)
        return torch.stack(codes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.counts(x) * self.unit).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"thresholds={self.edges.numel()}, unit={float(self.unit):.4g}, timesteps={self.timesteps}"


NEURON_TYPES = (MultiThresholdIF, ParallelNeuron, ScaleAndFire)


def _seen(timesteps: int, like: torch.Tensor) -> torch.Tensor:
    """t = 1..T shaped to broadcast over ``like`` laid out [T, B, ...]."""
    shape = [timesteps] + [1] * (like.dim() - 1)
    return torch.arange(1, timesteps + 1, dtype=like.dtype, device=like.device).reshape(shape)


class SpikingProduct(nn.Module):
    """``scale`` · the product of two spike trains (:mod:`n2c.products`): per step the increment of
    F(t) = P(A(t), B(t))/t, A the running sums, so that its running mean is the product of its
    inputs' running means; at T = 1 exactly the ANN's product of the two activations."""

    def __init__(self, mode: str, heads: int, scale: float, timesteps: int):
        super().__init__()
        self.mode, self.heads, self.scale, self.timesteps = mode, int(heads), float(scale), int(timesteps)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.timesteps == 1:
            return products.product_torch(a, b, self.heads, self.mode) * self.scale
        ra = a.reshape([self.timesteps, -1] + list(a.shape[1:])).cumsum(0)
        rb = b.reshape([self.timesteps, -1] + list(b.shape[1:])).cumsum(0)
        total = products.product_torch(ra.flatten(0, 1), rb.flatten(0, 1), self.heads, self.mode) * self.scale
        total = total.reshape([self.timesteps, -1] + list(total.shape[1:]))
        return products.increments_torch(total / _seen(self.timesteps, total)).flatten(0, 1)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, heads={self.heads}, scale={self.scale:.4g}, timesteps={self.timesteps}"


class SpikingSoftmax(nn.Module):
    """Softmax over the last axis of the running input means, delivered as the increments of
    F(t) = t·softmax(X(t)/t) (the rule of :mod:`n2c.products`); at T = 1 exactly ``softmax(x)``. Not a neuro-core operation: on a
    chip it runs on the embedded processors (the report counts it)."""

    def __init__(self, timesteps: int):
        super().__init__()
        self.timesteps = int(timesteps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.timesteps == 1:
            return x.softmax(dim=-1)
        running = x.reshape([self.timesteps, -1] + list(x.shape[1:])).cumsum(0)
        seen = _seen(self.timesteps, running)
        return products.increments_torch((running / seen).softmax(dim=-1) * seen).flatten(0, 1)

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}"


OPERATION_TYPES = (SpikingProduct, SpikingSoftmax)  # spiking operations that are not neurons


class SpikingNetwork(nn.Module):
    """A canonical fx graph whose activations are spiking neurons, run for T steps."""

    def __init__(self, graph: fx.GraphModule, timesteps: int, method: str = "mtn"):
        super().__init__()
        self.graph_module = graph
        self.timesteps = int(timesteps)
        self.method = method

    def neurons(self) -> dict[str, nn.Module]:
        return {name: m for name, m in self.graph_module.named_modules() if isinstance(m, NEURON_TYPES)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over T of the last layer's output for a batch ``x`` of shape (B, ...)."""
        batch = x.shape[0]
        steps = x.unsqueeze(0).expand(self.timesteps, *x.shape).reshape(self.timesteps * batch, *x.shape[1:])
        out = self.graph_module(steps)
        return out.reshape(self.timesteps, batch, *out.shape[1:]).mean(dim=0)
