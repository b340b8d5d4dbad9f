"""ANN → SNN conversion: prepare a canonical graph, then swap quantizers for neurons.

    prepare(model)        canonical fx graph (n2c.ingest.canonical), BatchNorm folded, MaxPool
                          checked, every ReLU turned into a QCFS quantizer (trained
                          λ kept, or λ calibrated from data: n2c.ann.calibration)
    to_snn(graph, method) every quantizer QCFS(λ, L) / SignedQCFS(λ, L) becomes a
                          spiking neuron, every product of attention and softmax its
                          spiking form (n2c.products); ``convert`` does both.

Methods (θ: threshold, K: spikes per step, v(0): initial potential; see n2c.neurons)

    if        IF neuron over T steps: θ = λ, K = 1, v(0) = θ/2 (QCFS + optimal
              initial potential). Exact in expectation; not exact beyond layer 1.
    mtn       multi-threshold neuron: θ = λ·T/L, K = ceil(L/T), v(0) = θ/2. At T = 1
              (θ = λ/L, K = L) the network equals the QCFS ANN exactly.
    pmsm      polarity multi-spike: like mtn, and signed quantizers get negative
              spikes (K⁻ = K); at T = 1 it equals the signed quantized ANN exactly.
    sfn       scale-and-fire: non-uniform thresholds placed from the activation
              distribution (n2c.ann.calibration.sfn_levels), 8-bit graded codes.
    parallel  parallel spiking neuron: θ = λ over a window of T steps, v(0) = θ/2,
              equal to the QCFS ANN with L = T at every depth; with calibration
              data, DA-QCFS shifts ψ and amplitudes θ+φ (training-free path).
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import torch
from torch import fx, nn

from n2c.ann import calibration
from n2c.data import Dataset
from n2c.errors import CalibrationError, UnsupportedLayerError
from n2c.ingest.canonical import canonicalize, module_of, set_submodule
from n2c.ingest.normalization import channelwise_conv
from n2c.ann.linear_chains import fold_linear_chains
from n2c.ann.maxpool import MaxRelay, replace_maxpools
from n2c.ann.qcfs import QCFS, SignedQCFS
from n2c.ann.attention import Product
from n2c.snn.modules import MultiThresholdIF, ParallelNeuron, ScaleAndFire, SpikingNetwork, SpikingProduct, \
    SpikingSoftmax

METHODS = ("if", "mtn", "pmsm", "sfn", "parallel")
MAXPOOL_MODES = ("exact", "avg", "error")
CALIBRATION_MODES = calibration.THRESHOLD_MODES


def _replace(gm: fx.GraphModule, node: fx.Node, new: nn.Module) -> None:
    set_submodule(gm, node.target, new)


def _drop(gm: fx.GraphModule, node: fx.Node) -> None:
    node.replace_all_uses_with(node.args[0])
    gm.graph.erase_node(node)


def _batchnorm_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t) with BN(x) = s·x + t per channel: s = γ/√(σ² + ε), t = β − μ·s."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        1 / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(scale)
    return scale, shift - bn.running_mean * scale


def _scaled(layer: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> nn.Module:
    """A copy of ``layer`` (Conv2d/Linear) followed by the per-channel affine s·y + t."""
    fused = copy.deepcopy(layer)
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(scale)
    fused.weight = nn.Parameter(layer.weight.detach() * scale.reshape(-1, *[1] * (layer.weight.dim() - 1)))
    fused.bias = nn.Parameter(bias * scale + shift)
    return fused


def _unpadded_average(m: nn.Module) -> bool:
    """Pools that commute with a per-channel affine map (every window averages real values)."""
    return isinstance(m, nn.AdaptiveAvgPool2d) or (isinstance(m, nn.AvgPool2d) and m.padding in (0, (0, 0))
                                                   and m.divisor_override is None)


def fold_batchnorm(gm: fx.GraphModule) -> fx.GraphModule:
    """Fold eval-mode BatchNorm into the Conv2d/Linear before it.

    y = γ·(W·x + b − μ)/√(σ² + ε) + β  ⇒  W' = W·s, b' = (b − μ)·s + β,  s = γ/√(σ² + ε).
    Average pools without padding between the layer and the BatchNorm commute with it and stay.
    Where that layer also feeds others (DenseNet: every later layer reads a layer's output through
    its own BatchNorm), this BatchNorm's reader gets a folded copy of it. A BatchNorm2d after
    anything else (a max pool, a ReLU, the input) becomes a depthwise 1×1 convolution, a weighted
    layer of its own. Other BatchNorms are an error.
    """
    for node in list(gm.graph.nodes):
        bn = module_of(gm, node)
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        scale, shift = _batchnorm_affine(bn)
        path = [node.args[0]]  # the BatchNorm's input, back through commuting pools
        while isinstance(path[-1], fx.Node) and _unpadded_average(module_of(gm, path[-1])):
            path.append(path[-1].args[0])
        layer = module_of(gm, path[-1]) if isinstance(path[-1], fx.Node) else None
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fused = _scaled(layer, scale, shift)
            if all(len(p.users) == 1 for p in path):
                _replace(gm, path[-1], fused)
            else:  # shared: a folded copy of the path for this BatchNorm alone
                last = path[-1].args[0]
                with gm.graph.inserting_before(node):
                    for i, p in enumerate(reversed(path)):
                        name = f"{node.target.replace('.', '_')}_folded{i}"
                        gm.add_submodule(name, fused if i == 0 else copy.deepcopy(module_of(gm, p)))
                        last = gm.graph.call_module(name, (last,))
                node.replace_all_uses_with(last)
                gm.graph.erase_node(node)
                continue
        elif isinstance(bn, nn.BatchNorm2d):
            _replace(gm, node, channelwise_conv(scale, shift))
            continue
        else:
            raise UnsupportedLayerError(
                f"BatchNorm1d '{node.target}' does not follow a Conv2d/Linear it can be folded into; "
                "move it after a conv or linear layer")
        _drop(gm, node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _is_activation(m) -> bool:
    return isinstance(m, (nn.ReLU, QCFS))


def check_maxpool(gm: fx.GraphModule, maxpool: str = "exact") -> fx.GraphModule:
    """A MaxPool before the first activation sees the analog image, constant over time, and stays.
    After an activation the max of spike sums is not the sum of per-step maxima: ``exact`` (the
    default) leaves it for :func:`n2c.ann.maxpool.replace_maxpools` (after calibration, which
    gives the thresholds its circuit needs), ``avg`` replaces it by an AvgPool2d of the same
    geometry (with a warning), ``error`` refuses it."""
    if maxpool not in MAXPOOL_MODES:
        raise UnsupportedLayerError(f"unknown --maxpool {maxpool!r}; use one of {', '.join(MAXPOOL_MODES)}")
    after_activation: set[str] = set()
    for node in gm.graph.nodes:
        m = module_of(gm, node)
        spiking_input = any(isinstance(a, fx.Node) and a.name in after_activation for a in node.args)
        if spiking_input or _is_activation(m):
            after_activation.add(node.name)
        if not isinstance(m, nn.MaxPool2d) or not spiking_input or maxpool == "exact":
            continue
        if maxpool == "error":
            raise UnsupportedLayerError(
                f"MaxPool2d '{node.target}' follows a spiking layer, where the max of spike sums is not the "
                "sum of per-step maxima; pass --maxpool exact (a circuit of ReLUs, exact on quantized values) "
                "or --maxpool avg (AvgPool2d; fine-tune for best accuracy)")
        if m.dilation not in (1, (1, 1)) or m.ceil_mode or m.return_indices:
            raise UnsupportedLayerError(f"MaxPool2d '{node.target}': dilation, ceil_mode and return_indices "
                                        "have no AvgPool2d equivalent")
        warnings.warn(f"MaxPool2d '{node.target}' replaced by AvgPool2d (--maxpool avg); accuracy may drop "
                      "until the model is fine-tuned with average pooling", stacklevel=2)
        _replace(gm, node, nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
    gm.recompile()
    return gm


def prepare(model: nn.Module, levels: int | None = None, calib: Dataset | None = None,
            calib_mode: str = "max", percentile: float = 99.9, maxpool: str = "exact",
            device: str | torch.device = "cpu") -> fx.GraphModule:
    """Canonical graph with folded BatchNorm and quantizers (QCFS / SignedQCFS) only; a MaxPool after
    an activation becomes its exact circuit (``n2c.ann.maxpool``) unless ``maxpool`` says otherwise.
    Calibration runs on ``device``; the graph returned is on the CPU."""
    example = torch.from_numpy(np.array(calib.x[:1])) if calib is not None and len(calib.x) else None
    gm = fold_linear_chains(fold_batchnorm(canonicalize(copy.deepcopy(model).eval(), example)))
    gm = check_maxpool(gm, maxpool)
    relus = [n.target for n in gm.graph.nodes if isinstance(module_of(gm, n), nn.ReLU)]
    if relus:
        if calib is None:
            raise CalibrationError(
                f"the model has plain ReLU activations ({', '.join(relus[:3])}{', …' if len(relus) > 3 else ''}) "
                "and no trained thresholds; pass calibration data (--calib digits, or a .npz file) or "
                "fine-tune it with QCFS (n2c train)")
        if levels is None:
            raise CalibrationError("calibrating ReLU activations needs the number of levels (--levels L)")
        if levels < 1:
            raise CalibrationError(f"--levels must be >= 1, got {levels}")
        gm = calibration.calibrate_thresholds(gm.to(device), calib, levels, calib_mode, percentile).cpu()
    if maxpool == "exact":
        gm = replace_maxpools(gm, example)  # the example's shape places ceil_mode's partial windows
    return gm


def to_snn(gm: fx.GraphModule, method: str = "mtn", timesteps: int = 1, calib: Dataset | None = None,
           v_init: float = 0.5, sfn_scale: float = 1.0, da: bool | None = None,
           device: str | torch.device = "cpu") -> SpikingNetwork:
    """Swap every quantizer of a prepared graph for the neurons of ``method`` (module docstring).

    ``v_init`` is the initial potential as a fraction of θ (0.5: the optimal one).
    ``calib`` is needed by ``sfn`` (level placement) and by ``parallel`` with DA-QCFS;
    ``da`` (default: on for layers calibrated from a ReLU) switches DA-QCFS. Calibration runs on
    ``device``; the SNN returned is on the CPU.
    """
    if method not in METHODS:
        raise CalibrationError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if timesteps < 1:
        raise CalibrationError(f"timesteps must be >= 1, got {timesteps}")
    acts = [n for n in gm.graph.nodes if isinstance(module_of(gm, n), QCFS)]
    for node in gm.graph.nodes:
        if isinstance(module_of(gm, node), nn.ReLU):
            raise CalibrationError(f"ReLU '{node.target}' has no threshold; run prepare() with calibration data")
    signed = [n.target for n in acts if isinstance(module_of(gm, n), SignedQCFS)]
    if signed and method in ("if", "mtn", "parallel"):
        raise CalibrationError(f"signed quantizer '{signed[0]}' needs negative spikes, which --method {method} "
                               "does not emit; use --method pmsm or sfn")
    if method == "pmsm" and not signed:
        warnings.warn("the model has no signed quantizers (SignedQCFS); PMSM then equals the MTN "
                      "(train with n2c train --quantizer signed for polarity spikes)", stacklevel=2)
    if method == "sfn" and calib is None:
        raise CalibrationError("--method sfn places its thresholds from data; pass calibration data (--calib)")
    relays = [n.target for n in acts if isinstance(module_of(gm, n), MaxRelay)]
    if method == "sfn" and relays:
        raise UnsupportedLayerError(f"--method sfn places non-uniform levels per layer, which breaks the exact "
                                    f"max-pooling circuit ({relays[0]}); use --maxpool avg with sfn, or another method")
    try:
        neurons = {k: m.cpu() for k, m in _neurons(gm.to(device), acts, method, timesteps, calib, v_init, sfn_scale,
                                                   da).items()}
    finally:
        gm.cpu()
    snn = copy.deepcopy(gm)
    for node in list(snn.graph.nodes):
        m = module_of(snn, node)
        if node.target in neurons:
            _replace(snn, node, neurons[node.target])
        elif isinstance(m, Product):
            _replace(snn, node, SpikingProduct(m.mode, m.heads, m.scale, timesteps))
        elif isinstance(m, nn.Softmax):
            _replace(snn, node, SpikingSoftmax(timesteps))
        elif isinstance(m, (nn.Dropout, nn.Identity)):
            _drop(snn, node)
    snn.graph.lint()
    snn.delete_all_unused_submodules()
    snn.recompile()
    return SpikingNetwork(snn, timesteps, method)


def _neurons(gm, acts, method, T, calib, v_init, sfn_scale, da) -> dict[str, nn.Module]:
    if method == "sfn":
        return _sfn_neurons(gm, acts, T, calib, sfn_scale)
    if method == "parallel":
        use_da = any(getattr(module_of(gm, n), "from_relu", False) for n in acts) if da is None else da
        if use_da and calib is None:
            raise CalibrationError("DA-QCFS calibration needs data (--calib), or turn it off (--no-da)")
        shifts = calibration.fit_da_qcfs(gm, calib, T) if use_da else {}
        out = {}
        for n in acts:
            theta = module_of(gm, n).lam.detach()
            psi, phi = shifts.get(n.target, (torch.zeros(()), torch.zeros(())))
            out[n.target] = ParallelNeuron(theta, T, v_init=v_init * theta + T * psi, spike_value=theta + phi)
        return out
    out = {}
    for n in acts:
        q = module_of(gm, n)
        lam, levels = q.lam.detach(), int(q.levels)
        if method == "if":
            theta, per_step = lam.clone(), 1
        else:  # mtn, pmsm: L levels spread over T steps; T = 1 gives QCFS's own θ = λ/L bit for bit
            per_step = math.ceil(levels / T)
            theta = lam / levels if T == 1 else lam * T / levels
        negative = per_step if isinstance(q, SignedQCFS) else 0
        out[n.target] = MultiThresholdIF(theta, per_step, T, v_init=v_init * theta, min_spikes=negative)
    return out


@torch.no_grad()
def _sfn_neurons(gm, acts, T, calib, sfn_scale) -> dict[str, nn.Module]:
    """Place SFN thresholds layer by layer: each layer is fitted on activations that have
    passed through the already-fitted SFN layers before it (run at T = 1)."""
    work = copy.deepcopy(gm)
    out = {}
    for n in acts:
        q = module_of(work, n)
        z = calibration.record_inputs(work, [n.target], calib)[n.target].numpy()
        lam = float(q.lam.detach().max())
        edges, codes, unit = calibration.sfn_levels(z, lam, int(q.levels), isinstance(q, SignedQCFS), sfn_scale)
        out[n.target] = ScaleAndFire(edges, codes, unit, T)
        _replace(work, n, ScaleAndFire(edges, codes, unit, 1).to(q.lam.device))
    return out


def convert(model: nn.Module, method: str = "mtn", timesteps: int = 1, calib: Dataset | None = None,
            levels: int | None = None, calib_mode: str | None = None, percentile: float = 99.9,
            maxpool: str = "exact", v_init: float = 0.5, sfn_scale: float = 1.0,
            da: bool | None = None, device: str | torch.device = "cpu") -> SpikingNetwork:
    """Convert a trained model (QCFS-trained, or plain ReLU with ``calib`` data) to an SNN.

    For ReLU models ``levels`` defaults to T for ``if`` and ``parallel`` (their
    quantizer has T levels); ``mtn``, ``pmsm`` and ``sfn`` need it given. ``calib_mode``
    defaults to ``channel-max`` for ``parallel`` (the training-free recipe) and ``max``
    otherwise. Calibration runs on ``device`` (``cpu`` or ``cuda``); the SNN is returned on the CPU.
    """
    return convert_with_ann(model, method, timesteps, calib, levels, calib_mode, percentile, maxpool, v_init,
                            sfn_scale, da, device)[1]


def convert_with_ann(model: nn.Module, method: str = "mtn", timesteps: int = 1, calib: Dataset | None = None,
                     levels: int | None = None, calib_mode: str | None = None, percentile: float = 99.9,
                     maxpool: str = "exact", v_init: float = 0.5, sfn_scale: float = 1.0,
                     da: bool | None = None, device: str | torch.device = "cpu") -> tuple[fx.GraphModule, SpikingNetwork]:
    """:func:`convert`, also returning the quantized ANN it converted (what the SNN approximates:
    QCFS quantizers, MaxPool as its circuit or replaced by --maxpool avg)."""
    if method not in METHODS or timesteps < 1:  # before prepare(), whose errors (--levels, --calib) would mislead
        raise CalibrationError(f"unknown method {method!r}; use one of {', '.join(METHODS)}" if method not in METHODS
                               else f"timesteps must be >= 1, got {timesteps}")
    if levels is None and method in ("if", "parallel"):
        levels = timesteps
    if calib_mode is None:
        calib_mode = "channel-max" if method == "parallel" else "max"
    gm = prepare(model, levels, calib, calib_mode, percentile, maxpool, device)
    return gm, to_snn(gm, method, timesteps, calib, v_init, sfn_scale, da, device)
