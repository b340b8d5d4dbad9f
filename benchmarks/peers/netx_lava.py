"""Peer for Lava speed: lava-dl netx (``lava.lib.dl.netx.hdf5.Network``) running the file
``n2c export --to netx`` writes, in Lava's fixed-point CPU simulation.

    from benchmarks.peers.netx_lava import run_netx
    spikes, timing = run_netx("net.h5", model, s_in, period=T)

Benchmark-only: nothing in ``n2c`` imports this module. The timing follows
``backends.lava.lower``'s: *compile* is ``create_runtime`` (Lava's compiler and runtime
start), *run* the ``RunSteps`` loop, *build* the ``hdf5.Network`` and the source and sink
Processes. Timing and alignment as in docs/netx.md: sample i's step j enters at time step
i·T + j + 1 and block k (1-based) sends it at sink index i·T + j + k.
"""

from __future__ import annotations

import time

import numpy as np

import backends.lava.runtime  # noqa: F401  (first: Lava fixes the multiprocessing start method)
from backends.lava.layout import from_lava, to_lava
from backends.lava.netx import RESET_OFFSET, NetxNetwork


def run_netx(path: str, model: NetxNetwork, s_in: np.ndarray, period: int) -> tuple[np.ndarray, dict]:
    """The last block's spikes (T, B, *shape) for integer inputs ``s_in`` (T, B, *input_shape),
    and the seconds of each phase and the steps run."""
    from lava.lib.dl.netx import hdf5
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    start = time.perf_counter()
    net = hdf5.Network(net_config=str(path), reset_interval=period, reset_offset=RESET_OFFSET,
                       input_message_bits=model.input_message_bits)
    t, b = s_in.shape[:2]
    frames = np.swapaxes(s_in, 0, 1).reshape(b * t, *s_in.shape[2:])  # sample after sample
    frames = to_lava(frames, lead=1) if model.blocks[0].type == "conv" else frames.reshape(b * t, -1)
    depth = len(net.layers)
    total = b * t + depth  # then zeros that flush the pipeline
    frames = np.concatenate([frames, np.zeros((depth, *frames.shape[1:]), frames.dtype)])
    source = Source(data=np.moveaxis(frames, 0, -1).astype(np.int32))
    sink = Sink(shape=net.out.shape, buffer=total)
    source.s_out.connect(net.inp)
    net.out.connect(sink.a_in)
    built = time.perf_counter()
    net.create_runtime(run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    compiled = time.perf_counter()
    try:
        net.run(condition=RunSteps(num_steps=total))
        ran = time.perf_counter()
        data = sink.data.get()  # (*lava shape, total)
    finally:
        net.stop()
    steps = np.arange(b)[None, :] * t + np.arange(t)[:, None] + depth
    spikes = from_lava(np.moveaxis(data[..., steps], [-2, -1], [0, 1]), lead=2).reshape(t, b, *model.blocks[-1].shape)
    return spikes, {"build_s": built - start, "compile_s": compiled - built, "run_s": ran - compiled, "steps": total,
                    "total_s": time.perf_counter() - start}
