"""Peer for accuracy tables: SpikingJelly's legacy ``ann2snn`` converter.

    from benchmarks.peers.spikingjelly_ann2snn import spikingjelly_accuracy, spikingjelly_version
    accs = spikingjelly_accuracy(relu_ann, calib.x, test.x, test.y, timesteps=[8, 16, 32, 64])

Needs ``spikingjelly==0.0.0.0.14`` (``pip install -e .[bench]``; its
``ann2snn`` package also imports ``requests``, which SpikingJelly does not
declare). Benchmark-only: nothing in ``n2c`` imports this module.

What SpikingJelly 0.0.0.0.14 does (paths relative to
``site-packages/spikingjelly/activation_based/``):

* **Graph.** ``ann2snn.Converter(dataloader, device=None, mode='Max',
  momentum=0.1, fuse_flag=True)`` (``ann2snn/converter.py:11``; the dataloader
  is the *first* positional argument) ``torch.fx.symbolic_trace``-s the ANN
  (``converter.py:104``), so the forward must be fx-traceable, and returns an
  ``fx.GraphModule`` (``converter.py:111``). Conv→BatchNorm pairs are fused
  with ``torch.nn.utils.fusion.fuse_conv_bn_eval`` unless the conv output has
  other users (``converter.py:198-219``); other BatchNorms stay as they are.
  The tracing shares submodules with the ANN and the fusion replaces them in
  place, so this wrapper converts a deep copy.
* **Only ``nn.ReLU`` modules are converted** (``type(...) is nn.ReLU``,
  ``converter.py:261`` and ``:303``). ``F.relu``/``torch.relu`` calls, ReLU
  subclasses and any other activation (QCFS, ReLU6, ...) are left in the graph
  unchanged and silently stay analog (SpikingJelly issue #517). This wrapper
  refuses such graphs (:func:`check_converted`) rather than report a hybrid
  analog/spiking network as an SNN.
* **Normalization (per layer, data-based).** A ``VoltageHook`` after each ReLU
  records, per calibration batch, ``s_b = max(a)`` (``mode='max'``),
  ``np.percentile(a, p)`` over the whole batch tensor (``mode='p%'``, e.g.
  ``'99.9%'``) or ``f·max(a)`` (``mode=f``, a Python float in (0, 1])
  (``ann2snn/modules.py:67-80``), and keeps an exponential moving average over
  batches: ``s = s_1`` for the first batch, then ``s = 0.9·s + 0.1·s_b``
  (``momentum=0.1``, ``modules.py:82-86``). So "max" is *not* the global
  maximum over the calibration set unless it fits in one batch; it is one
  scalar per layer (not per channel), and it depends on the batch order
  (this wrapper: calib_x in the given order, no shuffling).
* **Neuron.** Each ``ReLU`` becomes ``VoltageScaler(1/s) → IFNode(v_threshold=1.,
  v_reset=None) → VoltageScaler(s)`` (``converter.py:313-315``): an
  integrate-and-fire neuron with threshold ``s`` in ANN units, emitting
  spikes of height ``s``. IF update (eval mode, ``neuron.py:473-477``):
  ``v += x; spike = (v >= 1); v -= spike`` — reset by subtraction ("soft
  reset"), at most one spike per neuron per step, no leak, no refractory
  period, no negative spikes. The membrane starts at ``v(0) = 0``
  (``neuron.py:97-98``, made a tensor by ``v_float_to_tensor``,
  ``neuron.py:260-263``); there is no ``θ/2`` initial charge or any other
  bias correction, so the rate code under-estimates each activation by up to
  one spike (``s/T``) per layer.
* **Input and readout.** Nothing is done to the input: the analog image is the
  constant input current of the first layer at every step. The last layer
  (the final ``Linear``) has no neuron after it, so its output is analog;
  the prediction at ``T`` is the argmax of the sum (equivalently the mean) of
  the outputs of steps ``1..T``, as in SpikingJelly's own example
  (``ann2snn/examples/cnn_mnist.py:11-33``). The state is cleared before
  each batch with ``functional.reset_net`` (``functional.py:13``).
  Average pooling, ``+`` (residual), Flatten, Dropout (eval) and Linear act
  on the spike trains unchanged.

Everything runs on CPU in float32 with ``torch.set_num_threads(2)``; one
simulation of ``max(timesteps)`` steps records the accuracy at every requested
``T``.
"""

from __future__ import annotations

import contextlib
import copy
import operator
from importlib import metadata

import numpy as np
import torch
from torch import fx, nn

# Graph nodes that are linear (or shape-only) and so valid between the spiking
# layers of a converted network. Anything else left after conversion would run
# analog inside the "SNN".
_LINEAR_MODULES = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool1d, nn.AvgPool2d,
                   nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity)
_LINEAR_FUNCTIONS = (operator.add, operator.iadd, torch.add, torch.flatten, operator.getitem, getattr)
_LINEAR_METHODS = ("add", "flatten", "view", "reshape", "size", "contiguous")


def spikingjelly_version() -> str:
    """The installed SpikingJelly version, e.g. ``"0.0.0.0.14"``."""
    return metadata.version("spikingjelly")


def _tensor(x: np.ndarray, name: str) -> torch.Tensor:
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{name} must be (N, C, H, W), got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"{name} is empty")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _timesteps(timesteps: list[int]) -> list[int]:
    ts = sorted({int(t) for t in timesteps})
    if not ts or ts[0] < 1:
        raise ValueError(f"timesteps must be positive integers, got {timesteps!r}")
    return ts


@contextlib.contextmanager
def _quiet_converter():
    """Silence the tqdm bar that ``Converter.forward`` wraps around the calibration loader."""
    from spikingjelly.activation_based.ann2snn import converter as sj_converter

    original = sj_converter.tqdm
    sj_converter.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        sj_converter.tqdm = original


def check_converted(snn: fx.GraphModule) -> int:
    """Raise ValueError unless every nonlinearity of ``snn`` is a SpikingJelly IF neuron.

    Returns the number of IF neurons (layers). Catches what SpikingJelly leaves
    unconverted without a word: ``F.relu``/``torch.relu`` calls (issue #517),
    ReLU subclasses, other activation modules and unknown functions.
    """
    from spikingjelly.activation_based.ann2snn.modules import VoltageScaler
    from spikingjelly.activation_based.neuron import IFNode

    n_if = 0
    for node in snn.graph.nodes:
        if node.op == "call_module":
            m = snn.get_submodule(node.target)
            if isinstance(m, IFNode):
                n_if += 1
            elif not isinstance(m, (*_LINEAR_MODULES, VoltageScaler)) or isinstance(m, nn.ReLU):
                raise ValueError(f"SpikingJelly left module {node.target!r} ({type(m).__name__}) unconverted; "
                                 "only nn.ReLU modules become IF neurons")
        elif node.op == "call_function" and node.target not in _LINEAR_FUNCTIONS:
            name = getattr(node.target, "__name__", str(node.target))
            raise ValueError(f"SpikingJelly left function {name!r} (node {node.name!r}) unconverted; "
                             "use nn.ReLU modules, not F.relu/torch.relu (SpikingJelly issue #517)")
        elif node.op == "call_method" and node.target not in _LINEAR_METHODS:
            raise ValueError(f"SpikingJelly left method .{node.target}() (node {node.name!r}) unconverted")
    if n_if == 0:
        raise ValueError("SpikingJelly converted no layer: the network has no nn.ReLU module")
    return n_if


def spikingjelly_convert(relu_model: nn.Module, calib_x: np.ndarray, mode: str | float = "max",
                         batch_size: int = 256) -> fx.GraphModule:
    """Convert a deep copy of ``relu_model`` with ``ann2snn.Converter``, calibrated on ``calib_x``.

    The result is checked with :func:`check_converted` and is in eval mode on CPU.
    """
    from spikingjelly.activation_based import ann2snn

    torch.set_num_threads(2)
    x = _tensor(calib_x, "calib_x")
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.zeros(len(x), dtype=torch.long)),
        batch_size=batch_size, shuffle=False)
    ann = copy.deepcopy(relu_model).cpu().eval()
    converter = ann2snn.Converter(dataloader=loader, device="cpu", mode=mode)
    with torch.no_grad(), _quiet_converter():
        snn = converter(ann)
    snn.eval()
    check_converted(snn)
    return snn


def simulate_accuracy(snn: nn.Module, test_x: np.ndarray, test_y: np.ndarray, timesteps: list[int],
                      batch_size: int = 256) -> dict[int, float]:
    """Run ``snn`` for ``max(timesteps)`` steps on each batch (same analog image every step,
    state reset before each batch) and return the accuracy of the running-mean readout
    at every ``T`` in ``timesteps``."""
    from spikingjelly.activation_based import functional

    ts = _timesteps(timesteps)
    x = _tensor(test_x, "test_x")
    y = torch.from_numpy(np.asarray(test_y).astype(np.int64))
    if y.shape != (len(x),):
        raise ValueError(f"test_y must have shape ({len(x)},), got {tuple(y.shape)}")
    torch.set_num_threads(2)
    record = set(ts)
    correct = dict.fromkeys(ts, 0)
    snn.eval()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            functional.reset_net(snn)
            total = None
            for t in range(1, ts[-1] + 1):
                out = snn(xb)
                total = out.clone() if total is None else total + out
                if t in record:
                    correct[t] += int((total.argmax(1) == yb).sum())
    functional.reset_net(snn)
    return {t: correct[t] / len(x) for t in ts}


def spikingjelly_accuracy(relu_model: nn.Module, calib_x: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                          timesteps: list[int], mode: str | float = "max", batch_size: int = 256) -> dict[int, float]:
    """Accuracy of SpikingJelly's ``ann2snn`` conversion of ``relu_model`` at each ``T`` in ``timesteps``.

    ``relu_model``: a trained ANN whose activations are ``nn.ReLU`` modules
    (Conv2d/BatchNorm2d/ReLU/AvgPool2d/AdaptiveAvgPool2d/Flatten/Linear/Dropout
    and residual ``+``); it is not modified. ``calib_x``: float32 (N, C, H, W)
    calibration images for SpikingJelly's per-layer scales. ``mode``: ``"max"``,
    a percentile such as ``"99.9%"``, or a float fraction of the max in (0, 1].
    One simulation of ``max(timesteps)`` steps; returns ``{T: accuracy}``.
    """
    _timesteps(timesteps)  # fail before the conversion
    snn = spikingjelly_convert(relu_model, calib_x, mode=mode, batch_size=batch_size)
    return simulate_accuracy(snn, test_x, test_y, timesteps, batch_size=batch_size)
