"""Training for conversion: from scratch, or fine-tuning a trained ReLU network
into a quantized (QCFS) one that converts to a one-timestep SNN without loss.

    train(model, data)                     the demo's loop (Adam, cosine decay)
    relu_to_quantizer(model, L, calib=…)   every ReLU → QCFS/SignedQCFS, λ from data
    fit(model, data)                       the training loop (progress bar, validation)
    fine_tune(model, data, levels=L)       relu_to_quantizer, then fit
    save_checkpoint(model, path, shape)    TorchScript file n2c.ingest.load_model reads
    predict / accuracy                     evaluation helpers

Fine-tuning follows the QCFS recipe (Bu et al., ICLR 2022): replace ReLU by
the clip-floor-shift quantizer

    h(z) = λ · clip(floor(z·L/λ + 1/2), 0, L) / L

with λ initialised to a high percentile of the ReLU's input on calibration
data (Rueckauer et al. 2017's robust normalization), then train weights and λ
together with the straight-through gradient of the floor.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from typing import Iterable

import numpy as np
import torch
from torch import fx, nn
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from n2c.data import Dataset
from n2c.distributed import World, check_global_batch
from n2c.errors import CalibrationError, N2CError
from n2c.files import atomic_write
from n2c.ingest.canonical import canonicalize, set_submodule
from n2c.ann.qcfs import QCFS, SignedQCFS

QUANTIZERS = {"qcfs": QCFS, "signed": SignedQCFS}
OPTIMIZERS = ("adam", "sgd")


def train(model: nn.Module, data: Dataset, epochs: int = 60, lr: float = 1e-2,
          batch_size: int = 64, seed: int = 0, progress: bool = True) -> nn.Module:
    """Adam with cosine decay on cross-entropy; deterministic for a given seed.

    The demo's loop, kept bit for bit so its published numbers stay reproducible;
    :func:`fit` is the general one.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in tqdm(range(epochs), desc="train", unit="epoch", disable=not progress, leave=False):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    model.eval()
    return model


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Logits of ``model`` on float images ``x`` (eval mode), computed on the model's device."""
    model.eval()
    device = _device_of(model)
    out = [model(torch.from_numpy(np.array(x[i:i + batch_size])).to(device)).cpu()  # a copy: x may be read-only
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose largest logit is the label."""
    return float((np.asarray(logits).argmax(axis=1) == labels).mean())


def evaluate(model: nn.Module, data: Dataset, world: World | None = None, batch_size: int = 512) -> float:
    """Accuracy of ``model`` on ``data``; under torchrun each process classifies its shard and
    the counts are summed over the processes (every process returns the same number)."""
    world = world or World()
    shard = world.shard(len(data))
    logits = predict(model, data.x[shard], batch_size)
    correct = int((logits.argmax(axis=1) == data.y[shard]).sum()) if len(logits) else 0
    correct, total = world.sum(np.array([correct, len(data.y[shard])], np.float64))
    return float(correct / total) if total else 0.0


# ------------------------------------------------------------------ ReLU → quantizer

def _relu_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes
            if n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.ReLU)]


def relu_to_quantizer(model: nn.Module, levels: int, quantizer: str = "qcfs", calib: Dataset | None = None,
                      lam_init: str | float = "percentile", percentile: float = 99.9, batch_size: int = 256,
                      max_values: int = 4_000_000, seed: int = 0, world: World | None = None) -> fx.GraphModule:
    """A copy of ``model`` with every ReLU replaced by a quantizer with L = ``levels``.

    The model is first brought into n2c's canonical torch.fx form
    (:func:`n2c.ingest.canonical.canonicalize`), which turns every ReLU form (``nn.ReLU``,
    ``F.relu``, ``torch.relu``, ``x.relu()``, in-place variants, ``clamp(min=0)``)
    into an ``nn.ReLU`` module; a model that cannot be canonicalized raises
    :class:`~n2c.errors.UnsupportedLayerError` (it could not be converted either).
    QCFS/SignedQCFS layers already present are kept. BatchNorm stays unfolded,
    so the result can be trained further.

    ``quantizer``: ``"qcfs"`` → ``QCFS(L, λ)``, ``h(z) = λ·clip(⌊z·L/λ + 1/2⌋, 0, L)/L``;
    ``"signed"`` → ``SignedQCFS(L, λ)``, ``q(z) = λ·clip(⌊z·L/λ + 1/2⌋, -L, L)/L``.

    ``lam_init``: a positive float used as λ for every layer, or ``"percentile"``
    (λ = the ``percentile``-th percentile of the ReLU's input z over ``calib``; for
    ``"signed"`` of |z|; the maximum if that percentile is 0 because the ReLU is
    rarely active) or ``"max"`` (the maximum). The inputs are recorded with
    forward pre-hooks in eval mode (BatchNorm uses its running statistics). To
    bound memory, at most about ``max_values`` values per layer are kept: batches
    beyond that budget are subsampled uniformly (deterministic for ``seed``); with
    fewer values λ is exactly ``np.percentile`` of all of them.

    Raises :class:`~n2c.errors.CalibrationError` when calibration data is needed
    and missing, or when a ReLU never sees a positive input (for ``"signed"``: a
    nonzero one), naming that layer. The returned GraphModule is in eval mode, on the CPU.

    Under torchrun (``world``) each process records its shard of ``calib`` on its device and the
    values are gathered, so every process sets the same λ (with fewer than ``max_values``
    values, the λ one process would set from all of them).
    """
    world = world or World()
    if quantizer not in QUANTIZERS:
        raise N2CError(f"unknown quantizer {quantizer!r}; use one of {sorted(QUANTIZERS)}")
    if int(levels) < 1:
        raise N2CError(f"levels must be >= 1, got {levels}")
    if isinstance(lam_init, str) and lam_init not in ("percentile", "max"):
        raise N2CError(f"lam_init must be 'percentile', 'max' or a positive number, got {lam_init!r}")
    if not isinstance(lam_init, str) and not float(lam_init) > 0:
        raise N2CError(f"lam_init must be positive, got {lam_init}")
    if not 0 < percentile <= 100:
        raise N2CError(f"percentile must be in (0, 100], got {percentile}")
    gm = canonicalize(copy.deepcopy(model).eval())
    gm.eval()
    nodes = _relu_nodes(gm)
    if not nodes:
        return gm
    targets = [n.target for n in nodes]
    make = QUANTIZERS[quantizer]
    if not isinstance(lam_init, str):
        for target in targets:
            set_submodule(gm, target, make(levels, float(lam_init)))
        gm.recompile()
        return gm
    if calib is None or len(calib) == 0:
        raise CalibrationError(
            f"initialising λ of the ReLU activations ({', '.join(targets)}) needs calibration data; "
            "pass calib=Dataset (e.g. the training set) or a float lam_init")

    per_batch_budget = max(1, math.ceil(max_values * min(batch_size, len(calib)) / len(calib)))
    gen = torch.Generator().manual_seed(seed)
    recorded: dict[str, list[torch.Tensor]] = {t: [] for t in targets}

    def record(target):
        def hook(module, inputs):
            z = inputs[0].detach().flatten()
            z = z.abs() if quantizer == "signed" else z
            if z.numel() > per_batch_budget:
                z = z[torch.randperm(z.numel(), generator=gen)[:per_batch_budget]]
            recorded[target].append(z.clone())  # clone: an in-place op may change z later
        return hook

    hooks = [gm.get_submodule(t).register_forward_pre_hook(record(t)) for t in targets]
    shard = calib.x[world.shard(len(calib))]
    gm.to(world.device)
    try:
        with torch.no_grad():
            for i in range(0, len(shard), batch_size):
                gm(torch.from_numpy(np.array(shard[i:i + batch_size])).to(world.device))
    finally:
        for h in hooks:
            h.remove()
        gm.cpu()
    for target in targets:
        mine = torch.cat(recorded[target]).cpu().numpy() if recorded[target] else np.zeros(0, np.float32)
        values = world.gather(mine)
        lam = float(values.max() if lam_init == "max" else np.percentile(values, percentile))
        if not lam > 0:  # a sparse ReLU, active on fewer than (100 - percentile) % of the values
            lam = float(values.max())
        if not lam > 0:
            sign = "nonzero" if quantizer == "signed" else "positive"
            raise CalibrationError(
                f"ReLU '{target}' never sees a {sign} input on the {len(calib)} calibration samples; "
                "it is dead: check the data's preprocessing, use more calibration data, or pass a float lam_init")
        cap = getattr(gm.get_submodule(target), "cap", None)  # ReLU6: λ ≤ 6
        set_submodule(gm, target, make(levels, min(lam, cap) if cap is not None else lam))
    gm.recompile()
    return gm


@torch.no_grad()
def _keep_thresholds_positive(model: nn.Module) -> None:
    """λ > 0 is the quantizer's invariant; an optimizer step larger than a small λ (Adam moves each
    parameter by about lr) could cross zero. Each λ stays at least 1e-3 of its layer's largest."""
    for m in model.modules():
        if isinstance(m, QCFS):
            m.lam.clamp_(min=float(m.lam.abs().max()) * 1e-3 or 1e-12)


def has_relu(model: nn.Module) -> bool:
    """Whether ``model`` (canonicalized) still has ReLU activations of any form."""
    return bool(_relu_nodes(canonicalize(copy.deepcopy(model))))


# ------------------------------------------------------------------------- training

def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights only: not on λ, biases or BatchNorm parameters."""
    lams = {id(m.lam) for m in model.modules() if isinstance(m, QCFS)}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() > 1 and id(p) not in lams else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def fit(model: nn.Module, train_data: Dataset, epochs: int = 5, lr: float = 1e-3, batch_size: int = 64,
        optimizer: str = "adam", weight_decay: float = 0.0, seed: int = 0, progress: bool = True,
        val_data: Dataset | None = None, desc: str = "train", world: World | None = None) -> nn.Module:
    """Train ``model`` on cross-entropy and return it (in eval mode, on the CPU).

    Adam (or SGD with momentum 0.9, Nesterov) with a per-step cosine decay of the
    learning rate, ``lr_t = lr · (1 + cos(π·t/T))/2`` over all T steps; weight decay
    applies to weight matrices and kernels only (not λ, biases, BatchNorm).
    Deterministic for a ``seed`` on a given machine and thread count: the seed
    fixes the shuffling (``DistributedSampler``'s permutation, seed + epoch) and dropout.
    The progress bar (stderr) shows epoch, running loss and, with ``val_data``, the
    validation accuracy after each epoch.

    ``world`` (``n2c.distributed``): on ``world.device``; under torchrun, DistributedDataParallel
    with ``batch_size`` the global batch, split evenly over the processes (GPUs: BatchNorm
    synchronized), so that each step averages the gradient of the same samples as one process.
    """
    world = world or World()
    if epochs < 1:
        raise N2CError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise N2CError(f"batch size must be >= 1, got {batch_size}")
    check_global_batch(batch_size, world)
    if not lr > 0:
        raise N2CError(f"learning rate must be positive, got {lr}")
    if optimizer not in OPTIMIZERS:
        raise N2CError(f"unknown optimizer {optimizer!r}; use one of {OPTIMIZERS}")
    torch.manual_seed(seed)
    kinds = {name: type(m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    model, net = _parallel(model, world)
    x, y = train_data.x, torch.from_numpy(train_data.y)  # x may be memory-mapped: read batch by batch
    groups = _param_groups(model, weight_decay)
    opt = torch.optim.Adam(groups, lr=lr) if optimizer == "adam" else \
        torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    local = batch_size // world.size
    sampler = DistributedSampler(range(len(y)), num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed)
    steps_per_epoch = math.ceil(len(sampler) / local)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, unit="batch", disable=not progress or not world.main,
               dynamic_ncols=True, leave=False)
    postfix: dict[str, str] = {}
    try:
        for epoch in range(epochs):
            net.train()
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler), dtype=torch.int64)
            total, seen = 0.0, 0
            for i in range(0, len(order), local):
                idx = order[i:i + local]
                opt.zero_grad()
                loss = loss_fn(net(torch.from_numpy(x[idx.numpy()]).to(world.device)), y[idx].to(world.device))
                loss.backward()
                opt.step()
                _keep_thresholds_positive(model)
                sched.step()
                total += float(loss) * len(idx)
                seen += len(idx)
                postfix.update(epoch=f"{epoch + 1}/{epochs}", loss=f"{total / seen:.4f}")
                bar.set_postfix(postfix, refresh=False)
                bar.update()
            total, seen = world.sum(np.array([total, seen], np.float64))  # the epoch's loss over all processes
            postfix["loss"] = f"{total / seen:.4f}"
            if not math.isfinite(total):
                raise N2CError(f"training diverged (loss {total / seen}) in epoch {epoch + 1}; "
                               "lower the learning rate (--lr)")
            if val_data is not None:
                postfix["val_acc"] = f"{100 * evaluate(model, val_data, world):.2f}%"
                bar.set_postfix(postfix)
    finally:
        bar.close()
    return _plain(model, kinds).cpu().eval()


def _parallel(model: nn.Module, world: World) -> tuple[nn.Module, nn.Module]:
    """(the model on the device, the module to call): DistributedDataParallel under torchrun, with
    BatchNorm synchronized on GPUs (torch's SyncBatchNorm runs on GPUs only)."""
    model.to(world.device)
    if not world.distributed:
        return model, model
    from torch.nn.parallel import DistributedDataParallel
    if world.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [world.device.index] if world.device.type == "cuda" else None
    return model, DistributedDataParallel(model, device_ids=ids)


def _plain(model: nn.Module, kinds: dict) -> nn.Module:
    """SyncBatchNorm back to the BatchNorm class it was (``kinds``: name → class), so that the
    trained model converts and saves like any other."""
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.SyncBatchNorm) and name in kinds:
            bn = kinds[name](m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
            bn.load_state_dict(m.state_dict())
            set_submodule(model, name, bn)
    return model


def fine_tune(model: nn.Module, train_data: Dataset, levels: int = 8, quantizer: str = "qcfs",
              epochs: int = 5, lr: float = 1e-3, batch_size: int = 64, seed: int = 0, progress: bool = True,
              val_data: Dataset | None = None, optimizer: str = "adam", weight_decay: float = 0.0,
              lam_init: str | float = "percentile", percentile: float = 99.9,
              calib_samples: int | None = 2048, world: World | None = None) -> nn.Module:
    """Turn a trained ReLU network into a trained quantized one (returned in eval mode).

    If ``model`` still has ReLUs, they are replaced by :func:`relu_to_quantizer`
    (λ from the first ``calib_samples`` training samples, ``None`` = all), giving a
    canonical ``torch.fx.GraphModule`` copy; a model without ReLUs (already QCFS)
    is copied as it is. The copy is then trained with :func:`fit` for ``epochs``;
    ``model`` itself is not modified. ``world``: see :func:`fit` (torchrun, device).
    """
    converting = has_relu(model)
    if converting:
        calib = train_data if calib_samples is None else train_data.head(min(calib_samples, len(train_data)))
        qmodel = relu_to_quantizer(model, levels, quantizer, calib, lam_init=lam_init, percentile=percentile,
                                   world=world)
    else:
        qmodel = copy.deepcopy(model)
    return fit(qmodel, train_data, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
               weight_decay=weight_decay, seed=seed, progress=progress, val_data=val_data,
               desc="fine-tune" if converting else "train", world=world)


# ----------------------------------------------------------------------- checkpoint

def _example_input(example_shape: Iterable[int]) -> torch.Tensor:
    shape = tuple(int(s) for s in example_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    gen = torch.Generator().manual_seed(0)
    return torch.rand(shape, generator=gen)


def to_torchscript(model: nn.Module, example_shape: Iterable[int]) -> torch.jit.ScriptModule:
    """``torch.jit.script(model)`` in eval mode, or ``torch.jit.trace`` on an example
    input of ``example_shape`` ((C, H, W) or (B, C, H, W)) when scripting fails."""
    model = copy.deepcopy(model).eval()
    try:
        with warnings.catch_warnings():  # scripting an fx GraphModule warns about its annotations
            warnings.simplefilter("ignore", UserWarning)
            return torch.jit.script(model)
    except Exception:  # scripting rejects many valid Python models; tracing takes them
        with torch.no_grad():
            return torch.jit.trace(model, _example_input(example_shape), check_trace=False)


def save_checkpoint(model: nn.Module, path: str | os.PathLike, example_shape: Iterable[int]) -> str:
    """Write ``model`` as a TorchScript file at ``path`` atomically; return the path.

    The file is written to a temporary file in the same directory and moved
    into place with ``os.replace``, so ``path`` is either the old file or the
    complete new one, never a partial file. ``n2c.ingest.load_model(path)`` loads
    it back (as a canonical GraphModule with the same outputs). Errors writing
    the file raise :class:`~n2c.errors.N2CError`.
    """
    path = os.fspath(path)
    script = to_torchscript(model, example_shape)
    try:
        atomic_write(path, lambda tmp: torch.jit.save(script, tmp))
    except OSError as e:
        raise N2CError(f"cannot write {path}: {e.strerror or e}; choose a writable output path (-o)") from None
    return path
