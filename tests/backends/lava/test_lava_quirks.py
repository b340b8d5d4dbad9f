"""Guard tests: Lava behaviours the reference simulator and the lowering rely on, pinned one by
one so that a Lava upgrade that changes any of them fails here first, with its name. (The weight
truncation, the unsaturated Dense output, Conv's ignored weight_exp, its 24-bit wrap and its int8
groups are pinned in tests/contracts/test_reference_equals_lava.py.)"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _run(synapse, frames: np.ndarray, steps: int) -> np.ndarray:
    """Drive ``synapse`` from a RingBuffer with ``frames`` (n, steps) and record its output at every
    step, (n_out, steps)."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    source = Source(data=frames.astype(np.int32))
    sink = Sink(shape=synapse.a_out.shape, buffer=steps)
    source.s_out.connect(synapse.s_in)
    synapse.a_out.connect(sink.a_in)
    try:
        source.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        return np.asarray(sink.data.get()).astype(np.int64)
    finally:
        source.stop()


def test_graded_negative_spike_needs_message_bits():
    """Without num_message_bits the input is cast to bool: a graded -1 arrives as +1. The lowering
    sets num_message_bits on every edge from the sender's width (sign bit included)."""
    from lava.proc.dense.process import Dense

    frames = np.array([[-1, 0], [3, 0]])
    binary = _run(Dense(weights=np.array([[2, 4]])), frames, 2)
    graded = _run(Dense(weights=np.array([[2, 4]]), num_message_bits=8), frames, 2)
    assert binary[0, 1] == 2 + 4  # both inputs "spiked"
    assert graded[0, 1] == -2 + 12


def test_every_synapse_process_adds_one_step():
    """Dense sends at step t what it computed at step t-1 (the first step sends 0): the reference's
    Lava timing (run_stream) counts one step per synapse Process."""
    from lava.proc.dense.process import Dense

    out = _run(Dense(weights=np.array([[1]]), num_message_bits=8), np.array([[5, 7, 0]]), 3)
    assert out.tolist() == [[0, 5, 7]]


def test_delay_dense_adds_its_delay_to_the_process_step():
    """DelayDense with delay k delivers k+1 steps later, and sums each delay's product separately."""
    from lava.proc.dense.process import DelayDense

    synapse = DelayDense(weights=np.array([[2, 4]]), delays=np.array([[0, 2]]), num_message_bits=8)
    out = _run(synapse, np.array([[1, 0, 0, 0], [1, 0, 0, 0]]), 4)
    assert out.tolist() == [[0, 2, 0, 4]]


def test_lif_reset_clears_state_before_the_update():
    """LIFReset zeroes u and v at time_step % interval == offset, before that step's update: the
    neuron's window rule (t - d) % T == 0 with offset (1 + d) % T."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.lif.process import LIFReset

    lif = LIFReset(shape=(1,), du=4095, dv=0, vth=1000, bias_mant=10, bias_exp=0, reset_interval=3,
                   reset_offset=2)
    sink = Sink(shape=(1,), buffer=6)
    lif.s_out.connect(sink.a_in)
    seen = []
    try:
        for _ in range(6):
            lif.run(condition=RunSteps(num_steps=1), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
            seen.append(int(lif.v.get()[0]))
    finally:
        lif.stop()
    assert seen == [10, 10, 20, 30, 10, 20]  # time_step 2 and 5: cleared, then bias added
