"""The stages users run, as functions from one artifact to the next.

``export_model``  model file → NIR file
``load_network``  NIR file → quantized integer network
``run_backend``   integer network + data → integer readout, timing
The CLI and the demo are thin wrappers around these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from n2c.backends.ir import LayerGraph, import_nir
from n2c.backends.quantize import IntNetwork, quantize
from n2c.convert import convert
from n2c.data import Dataset
from n2c.errors import N2CError
from n2c.nir_export import to_nir, write_nir
from n2c.snn import SpikingNetwork

BACKENDS = ("reference", "lava")


def export_model(model, out_path: str, input_shape: tuple[int, ...], input_scale: float | None = None,
                 timesteps: int = 1, levels: int | None = None, calib: Dataset | None = None,
                 calib_mode: str | None = None, method: str = "mtn", **options) -> SpikingNetwork:
    """Convert ``model`` (or take a converted :class:`SpikingNetwork` as is) and write its
    NIR graph to ``out_path`` (atomically). ``options`` go to :func:`n2c.convert.convert`."""
    if isinstance(model, SpikingNetwork):
        snn = model
    else:
        snn = convert(model, method, timesteps, calib, levels, calib_mode, **options)
    write_nir(to_nir(snn, tuple(input_shape), input_scale), out_path)
    return snn


def load_network(nir_path: str, input_scale: float | None = None) -> tuple[LayerGraph, IntNetwork]:
    graph = import_nir(nir_path)
    return graph, quantize(graph, input_scale)


@dataclass
class BackendRun:
    backend: str
    output: np.ndarray  # (B, classes) integer readout
    seconds: float
    messages: dict | None = None  # reference only: every layer's messages (T, B, ...)

    @property
    def predictions(self) -> np.ndarray:
        return self.output.reshape(len(self.output), -1).argmax(axis=1)


def run_backend(net: IntNetwork, x: np.ndarray, backend: str, progress: bool = True,
                record_spikes: bool = False) -> BackendRun:
    """Run ``x`` on a backend. The reference always records every layer's messages; Lava
    records the spiking layers' counts only when ``record_spikes`` (extra sink processes)."""
    if tuple(x.shape[1:]) != tuple(net.source.shape):
        raise N2CError(f"the data has samples of shape {tuple(x.shape[1:])} but the graph expects "
                       f"{tuple(net.source.shape)}; use data the network was trained on")
    start = time.perf_counter()
    if backend == "reference":
        from n2c.backends.reference import simulate
        sim = simulate(net, x)
        return BackendRun(backend, sim.output, time.perf_counter() - start, sim.messages)
    if backend == "lava":
        from n2c.backends.lava.lower import run_lava, run_lava_with_spikes
        if record_spikes:
            out, counts = run_lava_with_spikes(net, x, progress=progress)
            return BackendRun(backend, out, time.perf_counter() - start, counts)
        out = run_lava(net, x, progress=progress)
        return BackendRun(backend, out, time.perf_counter() - start)
    raise N2CError(f"unknown backend {backend!r}; use one of {BACKENDS}")
