"""ANN → SNN conversion: prepare a canonical graph, then swap activations for neurons.

    prepare(model)   canonical fx graph, BatchNorm folded, every ReLU turned into
                     a QCFS activation (trained λ, or λ calibrated from data)
    to_snn(graph)    every QCFS(λ, L) becomes a MultiThresholdIF neuron with
                     v(0) = θ/2; at T = 1, θ = λ/L and it may fire up to L
                     spikes, so the one-step SNN computes the QCFS ANN exactly.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import fx, nn

from n2c.data import Dataset
from n2c.errors import CalibrationError, UnsupportedLayerError
from n2c.graph import canonicalize
from n2c.qcfs import QCFS
from n2c.snn import MultiThresholdIF, SpikingNetwork

CALIBRATION_MODES = ("max", "percentile")


def _replace(gm: fx.GraphModule, node: fx.Node, new: nn.Module) -> None:
    parent, _, name = node.target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, new)


def fold_batchnorm(gm: fx.GraphModule) -> fx.GraphModule:
    """Fold eval-mode BatchNorm into the preceding Conv2d/Linear.

    y = γ·(W·x + b − μ)/√(σ² + ε) + β  ⇒  W' = W·s, b' = (b − μ)·s + β,  s = γ/√(σ² + ε).
    A BatchNorm not directly after a conv/linear with a single user is an error.
    """
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target),
                                                      (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        bn = gm.get_submodule(node.target)
        prev = node.args[0]
        layer = gm.get_submodule(prev.target) if isinstance(prev, fx.Node) and prev.op == "call_module" else None
        if not isinstance(layer, (nn.Conv2d, nn.Linear)) or len(prev.users) != 1:
            raise UnsupportedLayerError(
                f"BatchNorm '{node.target}' does not directly follow a Conv2d/Linear it can be folded into; "
                "move it after a conv or linear layer")
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
            1 / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias.detach() if bn.affine else torch.zeros_like(scale)
        fused = copy.deepcopy(layer)
        bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(scale)
        fused.weight = nn.Parameter(layer.weight.detach() * scale.reshape(-1, *[1] * (layer.weight.dim() - 1)))
        fused.bias = nn.Parameter((bias - bn.running_mean) * scale + shift)
        _replace(gm, prev, fused)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


@torch.no_grad()
def calibrate(gm: fx.GraphModule, data: Dataset, levels: int, mode: str = "max",
              percentile: float = 99.9, batch_size: int = 256) -> fx.GraphModule:
    """Replace every ReLU by QCFS(L=levels, λ) with λ measured on ``data``.

    λ is the maximum (``mode='max'``) or the given percentile of the ReLU's
    input over all calibration samples (Rueckauer et al. 2017 robust
    normalization). QCFS layers already present keep their trained λ.
    """
    if mode not in CALIBRATION_MODES:
        raise CalibrationError(f"unknown calibration mode {mode!r}; use one of {CALIBRATION_MODES}")
    relus = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.ReLU)]
    recorded: dict[str, list[torch.Tensor]] = {n.target: [] for n in relus}
    hooks = [gm.get_submodule(n.target).register_forward_hook(
        lambda m, inp, out, key=n.target: recorded[key].append(inp[0].flatten()))
        for n in relus]
    gm.eval()
    for i in range(0, len(data), batch_size):
        gm(torch.from_numpy(data.x[i:i + batch_size]))
    for h in hooks:
        h.remove()
    for node in relus:
        values = torch.cat(recorded[node.target]).numpy()
        lam = float(values.max() if mode == "max" else np.percentile(values, percentile))
        if lam <= 0:
            raise CalibrationError(f"ReLU '{node.target}' never activates on the calibration data; "
                                   "check the data's preprocessing or the model")
        _replace(gm, node, QCFS(levels, lam))
    gm.recompile()
    return gm


def prepare(model: nn.Module, levels: int | None = None, calib: Dataset | None = None,
            calib_mode: str = "max") -> fx.GraphModule:
    """Canonical graph with folded BatchNorm and QCFS activations only."""
    gm = fold_batchnorm(canonicalize(copy.deepcopy(model).eval()))
    relus = [n.target for n in gm.graph.nodes
             if n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.ReLU)]
    if relus:
        if calib is None:
            raise CalibrationError(
                f"the model has plain ReLU activations ({', '.join(relus)}) and no trained thresholds; "
                "pass calibration data (--calib digits, or a .npz file) or train it with QCFS (n2c train)")
        if levels is None:
            raise CalibrationError("calibrating ReLU activations needs the number of levels (--levels L)")
        gm = calibrate(gm, calib, levels, calib_mode)
    for node in gm.graph.nodes:
        m = gm.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(m, nn.MaxPool2d):
            raise UnsupportedLayerError(
                f"MaxPool2d '{node.target}' cannot run on spikes (max of sums is not the sum of maxes); "
                "retrain with AvgPool2d in its place")
        if isinstance(m, nn.AdaptiveAvgPool2d):
            raise UnsupportedLayerError(
                f"AdaptiveAvgPool2d '{node.target}' is not supported yet; replace it with an AvgPool2d "
                "of the same geometry")
    return gm


def to_snn(gm: fx.GraphModule, timesteps: int = 1) -> SpikingNetwork:
    """Swap each QCFS(λ, L) for a MultiThresholdIF neuron with v(0) = θ/2.

    If T divides L: K = L/T spikes per step and θ = λ·T/L, so the most a neuron
    can emit over T steps (K·T spikes of θ, averaged) is λ, and for a constant
    input the count is floor(z·L/λ + 1/2), the QCFS level. T = 1 gives the
    multi-threshold neuron (exact for the whole network); T = L the classic
    QCFS IF neuron (θ = λ, one spike per step). Otherwise K = 1, θ = λ: the
    QCFS IF neuron, whose conversion error is zero in expectation.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    snn = copy.deepcopy(gm)
    for node in snn.graph.nodes:
        m = snn.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(m, nn.ReLU):
            raise CalibrationError(f"ReLU '{node.target}' has no threshold; run prepare() with calibration data")
        if isinstance(m, QCFS):
            levels = int(m.levels)
            if levels % timesteps == 0:
                per_step = levels // timesteps
                theta = m.lam.detach() / per_step  # = λ·T/L; T = 1 gives QCFS's own θ = λ/L bit for bit
            else:
                per_step, theta = 1, m.lam.detach().clone()
            _replace(snn, node, MultiThresholdIF(theta, per_step, timesteps))
        elif isinstance(m, (nn.Dropout, nn.Identity)):
            node.replace_all_uses_with(node.args[0])
            snn.graph.erase_node(node)
    snn.graph.lint()
    snn.delete_all_unused_submodules()
    snn.recompile()
    return SpikingNetwork(snn, timesteps)
