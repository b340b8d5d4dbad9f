"""Everything n2c fits from data: thresholds, quantizer hyper-parameters, SFN
levels and the DA-QCFS shifts of parallel conversion.

All of it runs on a canonical graph (``n2c.ingest.canonical``) over one pass of
calibration data, never touching the weights.

Threshold modes (plain ReLU networks; λ of the QCFS that replaces each ReLU)
    max                  λ = max z over the data (threshold balancing)
    percentile           λ = p-th percentile of z (Rueckauer et al. 2017, p = 99.9)
    channel-max          one λ per output channel, the channel's max
    channel-percentile   one λ per channel, the channel's p-th percentile

PMSM quantizer hyper-parameters (:func:`choose_quantizer`)
    initial λ = p-th percentile of |z|; L the smallest candidate whose quantized
    activations keep the entropy of the finest candidate to within δ bits:
    H(q_L(z)) ≥ max_L' H(q_L'(z)) − δ, with H(q) = −Σ_k p_k log2 p_k over the
    2L+1 levels. A quantizer is a deterministic function of z, so H(q(z)) is the
    information about z it passes on. On smooth activations H grows by about one
    bit per doubling of L, so the default δ = 1 bit gives about half the finest
    candidate; on concentrated ones (most values in a few levels) it stops early.

SFN thresholds (:func:`sfn_levels`)
    Lloyd-Max on the clipped activations f(z) = clip(z, 0, λ) (or clip(z, -λ, λ)
    when signed): levels r_0 = 0 < r_1 < … < r_N placed by the activation
    distribution (quantile initialisation, then centroid iterations), thresholds
    e_i = α·(r_{i-1} + r_i)/2 with the SFN scale factor α (1 = nearest level).
    Levels are rounded to integer codes of unit u = λ/127 so a graded spike
    carries an 8-bit signed integer.

DA-QCFS (:func:`fit_da_qcfs`, Hao et al. 2025)
    For each activation, in graph order, within every batch: ψ_c = channel mean
    of (z_ref - z_q) at the input, then the T-level quantizer
    n = clip(floor(((z_q + ψ)·T + θ/2)/θ), 0, T), and the amplitude correction
    φ_c = Σ(r_ref - θ·n/T) / Σ(n/T) over the channel (so the corrected layer is
    unbiased on the batch; the reference code uses the plain mean difference).
    Both are exponential moving averages, new = 0.99·old + 0.01·batch (the first
    batch initialises them). The reference path is the trained QCFS for QCFS
    layers and clip(z, 0, θ) for layers calibrated from a ReLU. Only 4-D (conv)
    activations get channel-wise ψ, φ; others keep ψ = φ = 0, as in the paper.
"""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch import fx, nn

from n2c.data import Dataset
from n2c.errors import CalibrationError
from n2c.ingest.canonical import set_submodule
from n2c.ann.qcfs import QCFS, SignedQCFS

THRESHOLD_MODES = ("max", "percentile", "channel-max", "channel-percentile")
SFN_CODE_MAX = 127
MAX_SAMPLES = 400_000  # values kept per layer for percentiles and level placement


def _batches(data: Dataset, batch_size: int, module: nn.Module | None = None):
    """``data`` in batches, on the device of ``module``'s parameters (calibration runs where the
    model is: ``n2c export --device cuda``)."""
    device = next((p.device for p in module.parameters()), torch.device("cpu")) if module is not None else None
    for i in range(0, len(data), batch_size):
        x = torch.from_numpy(np.array(data.x[i:i + batch_size]))  # a copy: x may be memory-mapped
        yield x if device is None else x.to(device)


def _channel_view(z: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) → (C, B·...) so statistics can be taken per channel."""
    return z.transpose(0, 1).reshape(z.shape[1], -1)


def _per_channel(z: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) → (C, 1, …, 1, B·...): per-channel values, laid out so that a statistic
    over the last axis has the shape of a per-channel λ ((C, 1, 1) for images, (C,) for vectors)."""
    return _channel_view(z).reshape(z.shape[1], *[1] * (z.dim() - 2), -1)


@torch.no_grad()
def record_inputs(gm: fx.GraphModule, targets: list[str], data: Dataset, batch_size: int = 256,
                  per_channel: bool = False) -> dict[str, torch.Tensor]:
    """Inputs of the modules ``targets`` on ``data``: flat values, or per channel laid out
    (C, 1, …, 1, values) (see :func:`_per_channel`). At most :data:`MAX_SAMPLES` values per
    module (a fixed random subsample)."""
    recorded: dict[str, list[torch.Tensor]] = {t: [] for t in targets}
    hooks = [gm.get_submodule(t).register_forward_hook(
        lambda m, inp, out, key=t: recorded[key].append((_per_channel(inp[0]) if per_channel else inp[0].flatten()).cpu()))
        for t in targets]
    gm.eval()
    try:
        for x in _batches(data, batch_size, gm):
            gm(x)
    finally:
        for h in hooks:
            h.remove()
    gen = torch.Generator().manual_seed(0)
    out = {}
    for t, chunks in recorded.items():
        z = torch.cat(chunks, dim=-1)
        if z.shape[-1] > MAX_SAMPLES:
            z = z[..., torch.randperm(z.shape[-1], generator=gen)[:MAX_SAMPLES]]
        out[t] = z
    return out


def threshold_from(values: torch.Tensor, mode: str, percentile: float):
    """λ from :func:`record_inputs` values: a float, or for the channel modes a per-channel
    tensor of the values' shape without their last axis."""
    if mode not in THRESHOLD_MODES:
        raise CalibrationError(f"unknown threshold mode {mode!r}; use one of {', '.join(THRESHOLD_MODES)}")
    if not 0 < percentile <= 100:
        raise CalibrationError(f"percentile must be in (0, 100], got {percentile}")
    v = values.double().numpy()
    if mode.startswith("channel"):
        lam = v.max(axis=-1) if mode == "channel-max" else np.percentile(v, percentile, axis=-1)
        return torch.tensor(lam, dtype=torch.float32)
    return float(v.max() if mode == "max" else np.percentile(v, percentile))


@torch.no_grad()
def calibrate_thresholds(gm: fx.GraphModule, data: Dataset, levels: int, mode: str = "max",
                         percentile: float = 99.9, batch_size: int = 256) -> fx.GraphModule:
    """Replace every ReLU by QCFS(L = ``levels``, λ) with λ measured on ``data``.

    QCFS layers already present keep their trained λ. Channels that never
    activate get the layer's largest λ (their output is 0 either way). The new
    QCFS modules are marked ``from_relu = True`` (DA-QCFS uses clip(z, 0, λ) as
    their reference).
    """
    relus = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.ReLU)]
    if not relus:
        return gm
    per_channel = mode.startswith("channel")
    recorded = record_inputs(gm, [n.target for n in relus], data, batch_size, per_channel)
    for node in relus:
        lam = threshold_from(recorded[node.target], mode, percentile)
        lam_t = torch.as_tensor(lam)
        if float(lam_t.max()) <= 0:
            raise CalibrationError(f"ReLU '{node.target}' never activates on the calibration data; "
                                   "check the data's preprocessing or the model")
        lam_t = torch.where(lam_t > 0, lam_t, lam_t.max())
        cap = getattr(gm.get_submodule(node.target), "cap", None)  # ReLU6: λ ≤ 6
        if cap is not None:
            lam_t = lam_t.clamp(max=cap)
        q = QCFS(levels, lam_t)
        q.from_relu = True
        set_submodule(gm, node.target, q)
    gm.recompile()
    return gm


# --- PMSM quantizer hyper-parameters -------------------------------------------------

def quantized_entropy(z: np.ndarray, lam: float, levels: int, signed: bool = True) -> float:
    """Entropy in bits of the quantizer levels clip(floor(z·L/λ + 1/2), -L or 0, L) over samples z."""
    k = np.clip(np.floor(np.asarray(z, dtype=np.float64) * levels / lam + 0.5), -levels if signed else 0, levels)
    _, counts = np.unique(k, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def choose_quantizer(z: np.ndarray, candidates=(1, 2, 4, 8, 16, 32), percentile: float = 99.9,
                     delta_bits: float = 1.0, signed: bool = True) -> tuple[float, int]:
    """Initial λ and number of levels L for a (signed) quantization layer, from samples ``z``.

    λ = p-th percentile of |z| (robust to outliers); L = the smallest candidate with
    H(q_L(z)) ≥ max over candidates of H − ``delta_bits``.
    """
    z = np.asarray(z, dtype=np.float64).ravel()
    if z.size == 0 or not np.isfinite(z).all():
        raise CalibrationError("choose_quantizer needs finite activation samples")
    lam = float(np.percentile(np.abs(z), percentile))
    if lam <= 0:
        raise CalibrationError("the activations are all zero; λ cannot be chosen from them")
    entropies = {L: quantized_entropy(z, lam, L, signed) for L in sorted(candidates)}
    best = max(entropies.values())
    return lam, next(L for L, h in entropies.items() if h >= best - delta_bits)


# --- SFN level placement -------------------------------------------------------------

def sfn_levels(z: np.ndarray, lam: float, levels: int, signed: bool = False, scale: float = 1.0,
               iterations: int = 20) -> tuple[np.ndarray, np.ndarray, float]:
    """Thresholds, integer codes and code unit of an SFN with ``levels`` levels per branch.

    Returns ``(edges (N,), codes (N+1,), unit)`` for :class:`n2c.snn.modules.ScaleAndFire`
    (N = levels, or 2·levels when signed).
    """
    if levels < 1:
        raise CalibrationError(f"SFN needs at least one level, got {levels}")
    if not scale > 0:
        raise CalibrationError(f"the SFN scale factor must be positive, got {scale}")
    f = np.clip(np.asarray(z, dtype=np.float64).ravel(), -lam if signed else 0.0, lam)
    unit = lam / SFN_CODE_MAX
    pos = _lloyd(f[f > 0], lam, levels, iterations)
    neg = -_lloyd(-f[f < 0], lam, levels, iterations)[::-1] if signed else np.zeros(0)
    r = np.concatenate([neg, [0.0], pos])
    codes = np.round(r / unit)
    codes = np.maximum.accumulate(codes)  # rounding must not reorder levels
    codes = np.unique(codes)  # merged levels collapse; thresholds follow
    edges = scale * (codes[:-1] + codes[1:]) / 2 * unit
    return edges, codes, unit


def _lloyd(f: np.ndarray, lam: float, n: int, iterations: int) -> np.ndarray:
    """n positive reconstruction levels for values f in (0, λ], with 0 as a fixed extra level."""
    if f.size == 0:  # never active on this side: uniform levels
        return lam * np.arange(1, n + 1) / n
    r = np.quantile(f, (np.arange(n) + 0.5) / n)
    for _ in range(iterations):
        allr = np.concatenate([[0.0], r])
        edges = (allr[:-1] + allr[1:]) / 2
        bins = np.searchsorted(edges, f, side="right")  # 0 → level 0 (fixed), i → r[i-1]
        sums = np.bincount(bins, weights=f, minlength=n + 1)[1:]
        counts = np.bincount(bins, minlength=n + 1)[1:]
        r = np.where(counts > 0, sums / np.maximum(counts, 1), r)
        r = np.sort(np.clip(r, 1e-12, lam))
    return r


# --- DA-QCFS -------------------------------------------------------------------------

def da_quantize(z: torch.Tensor, theta: torch.Tensor, timesteps: int, psi, phi) -> tuple[torch.Tensor, torch.Tensor]:
    """The DA-QCFS activation: ``((θ+φ)/T)·n``, ``n = clip(floor(((z+ψ)·T + θ/2)/θ), 0, T)``.
    Returns (output, n). Written as the parallel neuron computes it: summed input
    T·(z+ψ) plus v_init = θ/2 (``n2c.neurons.parallel.count``)."""
    n = torch.clamp(torch.floor((theta / 2 + (z + psi) * timesteps) / theta), 0, timesteps)
    return (theta + phi) * n / timesteps, n


@torch.no_grad()
def fit_da_qcfs(gm: fx.GraphModule, data: Dataset, timesteps: int, batch_size: int = 256,
                momentum: float = 0.99) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Fit ψ, φ of every QCFS layer of ``gm`` for parallel neurons over ``timesteps`` steps.

    Returns {module target: (ψ, φ)}, each shaped like the layer's λ broadcast per
    channel ((C, 1, 1) for conv activations; scalar zeros for others).
    """
    gm.eval()
    acts = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), QCFS)]
    if any(isinstance(gm.get_submodule(n.target), SignedQCFS) for n in acts):
        raise CalibrationError("parallel neurons emit no negative spikes; signed quantizers need --method pmsm")
    params: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {n.target: None for n in acts}
    for x in _batches(data, batch_size, gm):
        ref: dict[str, torch.Tensor] = {}
        qnt: dict[str, torch.Tensor] = {}
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                ref[node.name] = qnt[node.name] = x
            elif node.op == "output":
                continue
            elif node.op == "call_function" and node.target is operator.add:
                a, b = node.args
                ref[node.name], qnt[node.name] = ref[a.name] + ref[b.name], qnt[a.name] + qnt[b.name]
            elif node.target in params:
                ref[node.name], qnt[node.name] = _da_step(gm.get_submodule(node.target), ref[node.args[0].name],
                                                          qnt[node.args[0].name], timesteps, params, node.target,
                                                          momentum)
            else:
                m = gm.get_submodule(node.target)
                ref[node.name], qnt[node.name] = m(ref[node.args[0].name]), m(qnt[node.args[0].name])
    return {k: (v[0].cpu(), v[1].cpu()) if v is not None else (torch.zeros(()), torch.zeros(()))
            for k, v in params.items()}


def _da_step(q: QCFS, z_ref, z_q, timesteps, params, key, momentum):
    theta = q.lam.detach()
    r_ref = torch.clamp(z_ref, torch.zeros_like(theta), theta) if getattr(q, "from_relu", False) else q(z_ref)
    if z_q.dim() != 4:  # Linear activations keep the plain parallel neuron
        params[key] = None
        return r_ref, da_quantize(z_q, theta, timesteps, 0.0, 0.0)[0]
    shape = (-1, 1, 1)
    psi_b = _channel_view(z_ref - z_q).mean(dim=1).reshape(shape)
    old = params[key]
    psi = psi_b if old is None else momentum * old[0] + (1 - momentum) * psi_b
    _, n = da_quantize(z_q, theta, timesteps, psi, 0.0)
    rate = _channel_view(n / timesteps).sum(dim=1)
    err = _channel_view(r_ref - theta * n / timesteps).sum(dim=1)
    phi_b = torch.where(rate > 0, err / rate.clamp(min=1e-12), torch.zeros_like(rate)).reshape(shape)
    phi = phi_b if old is None else momentum * old[1] + (1 - momentum) * phi_b
    phi = torch.maximum(phi, -theta)  # the spike amplitude θ + φ stays non-negative
    params[key] = (psi, phi)
    return r_ref, da_quantize(z_q, theta, timesteps, psi, phi)[0]

