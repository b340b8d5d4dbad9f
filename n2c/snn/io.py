"""Saved SNN files: a converted :class:`~n2c.snn.modules.SpikingNetwork` as one TorchScript file.

``n2c convert`` writes them with :func:`save_snn`; ``n2c export`` reads them with
:func:`load_snn` (use :func:`is_snn_file` to tell them from a model to convert).

The file is ``torch.jit.save`` of a :class:`ScriptableSNN`: a scripted wrapper
with the attributes ``n2c_timesteps: int``, ``n2c_method: str`` and
``n2c_format_version: int`` and the submodule ``graph_module``, the SNN's
canonical fx graph scripted. So anything that runs TorchScript can use it
without n2c::

    torch.jit.load(path)(x)   # x (B, C, H, W) -> the mean over T of the last layer

which equals ``snn(x)`` bit for bit.

Loading does not unpickle Python objects: ``torch.jit.load`` reads the archive
with TorchScript's own restricted unpickler, as :mod:`n2c.ingest` does for
TorchScript models. The fx graph is then rebuilt from the scripted graph by the
ingest's TorchScript interpreter with the three neuron modules of :mod:`n2c.snn.modules`
added as leaf types, each reconstructed from its buffers and int attributes,
so the result is an ordinary :class:`SpikingNetwork` of plain ``nn`` modules.

Entry points. :func:`n2c.ingest.load_model` refuses a saved SNN with a
:class:`~n2c.errors.ModelLoadError` that points here: a model loader returns an
ANN to convert, and an SNN quietly passing for one (or being converted twice)
would be a worse surprise than the one-line refusal. Reading an SNN is this
module's separate entry point, :func:`load_snn`, and callers that accept either
(``n2c export``) dispatch on :func:`is_snn_file`.

Every bad file is a one-line :class:`~n2c.errors.ModelLoadError` naming the
problem and the fix.
"""

import os
import secrets
import warnings
import zipfile
from typing import Any

import torch
from torch import fx, nn

from n2c import products
from n2c.errors import ModelLoadError, N2CError, UnsupportedLayerError
from n2c.ingest.files import SNN_CLASS, check_readable, one_line, root_class
from n2c.ingest.files import is_snn_file  # noqa: F401  (part of this module's API)
from n2c.ingest.torchscript import ScriptImporter
from n2c.snn.modules import MultiThresholdIF, ParallelNeuron, ScaleAndFire, SpikingNetwork, SpikingProduct, \
    SpikingSoftmax

FORMAT_VERSION = 1
_CONVERT_AGAIN = "convert the model again with n2c convert"


class ScriptableSNN(nn.Module):
    """The scriptable form of a :class:`SpikingNetwork` that :func:`save_snn` writes.

    ``forward`` is ``SpikingNetwork.forward`` in TorchScript-compatible spelling:
    the input is repeated over T steps as ``[T·B, ...]``, run through the graph,
    and the output averaged over the steps.
    """

    # no `from __future__ import annotations` in this module: TorchScript needs these real
    n2c_timesteps: int
    n2c_method: str
    n2c_format_version: int

    def __init__(self, graph_module: nn.Module, timesteps: int, method: str):
        super().__init__()
        self.graph_module = graph_module
        self.n2c_timesteps = int(timesteps)
        self.n2c_method = str(method)
        self.n2c_format_version = FORMAT_VERSION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.n2c_timesteps
        batch = x.shape[0]
        sample = list(x.shape[1:])
        repeated = x.unsqueeze(0).expand([steps] + list(x.shape)).reshape([steps * batch] + sample)
        out = self.graph_module(repeated)
        return out.reshape([steps, batch] + list(out.shape[1:])).mean(dim=0)


# ------------------------------------------------------------------------------ save

def save_snn(snn: SpikingNetwork, path: str | os.PathLike) -> None:
    """Write ``snn`` to ``path`` as a TorchScript file (atomically: no partial file on failure).

    Raises :class:`UnsupportedLayerError` if the network cannot be compiled or
    would not load back, and :class:`N2CError` if the file cannot be written.
    """
    if not isinstance(snn, SpikingNetwork):
        raise TypeError(f"save_snn takes a SpikingNetwork, got {type(snn).__name__}")
    path = os.fspath(path)
    scripted = _script(snn)
    _rebuild(scripted, path, saving=True)  # refuse to write what load_snn could not read back
    _atomic_jit_save(scripted, path)


def _script(snn: SpikingNetwork) -> torch.jit.ScriptModule:
    wrapper = ScriptableSNN(snn.graph_module, snn.timesteps, snn.method)
    try:
        with warnings.catch_warnings():
            # scripting an fx GraphModule warns about its untyped instance attributes
            warnings.simplefilter("ignore", UserWarning)
            return torch.jit.script(wrapper.eval())
    except Exception as e:
        raise UnsupportedLayerError(
            f"cannot compile the SNN to TorchScript ({one_line(e)[:200]}); the graph must consist of "
            "n2c's canonical layers and neurons (n2c.ingest.canonical.LEAF_MODULES)") from None


def _atomic_jit_save(scripted: torch.jit.ScriptModule, path: str) -> None:
    """torch.jit.save to a temporary file beside ``path``, then os.replace."""
    directory, name = os.path.split(os.path.abspath(path))
    if os.path.isdir(path):
        raise N2CError(f"cannot write {path}: it is a directory; pass a file name such as {path}/snn.pt")
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies, as for open()
    except OSError as e:
        raise N2CError(f"cannot write {path} ({e.strerror}); check that {directory} exists and is "
                       "writable") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.jit.save(scripted, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, Exception):  # torch.jit.save reports write errors as RuntimeError
            reason = e.strerror if isinstance(e, OSError) and e.strerror else one_line(e)[:160]
            raise N2CError(f"cannot write {path} ({reason}); check the path and the free disk space") from None
        raise


# ------------------------------------------------------------------------------ load

def load_snn(path: str | os.PathLike) -> SpikingNetwork:
    """Read a file written by :func:`save_snn` back into a :class:`SpikingNetwork` (eval mode)."""
    path = os.fspath(path)
    _check_snn_file(path)
    try:
        script = torch.jit.load(path, map_location="cpu")
    except Exception as e:
        raise ModelLoadError(f"cannot read the SNN file {path} ({one_line(e)[:160]}); the file is corrupt, "
                             f"{_CONVERT_AGAIN}") from None
    timesteps, method = _metadata(script, path)
    return SpikingNetwork(_rebuild(script, path), timesteps, method).eval()


def _check_snn_file(path: str) -> None:
    check_readable(path, "SNN file", "pass the SNN file written by n2c convert",
                   f"the save was interrupted, {_CONVERT_AGAIN}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if not zipfile.is_zipfile(path):
        if magic == b"PK\x03\x04":
            raise ModelLoadError(f"{path} is a truncated or corrupt SNN file; {_CONVERT_AGAIN}")
        raise ModelLoadError(f"{path} is not a saved n2c SNN (not a TorchScript archive); pass a file "
                             "written by n2c convert")
    try:
        root = root_class(path)
    except Exception as e:  # zipfile raises several types for damaged archives
        raise ModelLoadError(f"{path} is a corrupt SNN file ({one_line(e)[:120]}); {_CONVERT_AGAIN}") from None
    if root is None:
        raise ModelLoadError(f"{path} is not a saved n2c SNN (a zip archive but not TorchScript); pass a file "
                             "written by n2c convert")
    if root != SNN_CLASS:
        raise ModelLoadError(f"{path} is a TorchScript model ({root}), not a saved n2c SNN; convert it with "
                             "n2c convert, or pass it to n2c export as a model")


def _metadata(script: Any, path: str) -> tuple[int, str]:
    if getattr(script, "original_name", None) != SNN_CLASS:
        raise ModelLoadError(f"{path} is not a saved n2c SNN; pass a file written by n2c convert")
    version = getattr(script, "n2c_format_version", None)
    timesteps = getattr(script, "n2c_timesteps", None)
    method = getattr(script, "n2c_method", None)
    if not isinstance(version, int) or not isinstance(timesteps, int) or not isinstance(method, str) \
            or timesteps < 1 or not hasattr(script, "graph_module"):
        raise ModelLoadError(f"{path} lacks n2c's SNN attributes (format version, timesteps, method); the file "
                             f"is damaged, {_CONVERT_AGAIN}")
    if version > FORMAT_VERSION:
        raise ModelLoadError(f"{path} was written by a newer n2c (SNN format version {version}, this n2c reads "
                             f"up to {FORMAT_VERSION}); upgrade n2c to read it")
    if version < 1:
        raise ModelLoadError(f"{path} has an invalid SNN format version {version}; {_CONVERT_AGAIN}")
    return timesteps, method


def _rebuild(script: Any, path: str, saving: bool = False) -> fx.GraphModule:
    """The canonical fx graph of a scripted :class:`ScriptableSNN`'s ``graph_module``."""
    try:
        gm = ScriptImporter(script.graph_module.eval(), leaves=_NEURON_LEAVES).run()
    except UnsupportedLayerError as e:
        problem = str(e).split("; ")[0]
        if saving:
            raise UnsupportedLayerError(
                f"cannot save the SNN to {path}: n2c could not read it back ({problem}); the graph must "
                "consist of n2c's canonical layers and neurons (n2c.ingest.canonical.LEAF_MODULES)") from None
        raise ModelLoadError(f"{path}: the saved SNN's graph cannot be rebuilt ({problem}); it was not written "
                             f"by this n2c or is damaged, {_CONVERT_AGAIN}") from None
    return gm


# ------------------------------------------------------------------- neuron leaves

def _neuron_state(sub: Any, where: str, buffers: tuple[str, ...], ints: tuple[str, ...]) -> tuple[dict, dict]:
    tensors = dict(sub.named_buffers(recurse=False))
    values = {n: getattr(sub, n, None) for n in ints}
    if set(tensors) != set(buffers) or any(not isinstance(v, int) or isinstance(v, bool) for v in values.values()):
        raise UnsupportedLayerError(
            f"{where} has buffers {sorted(tensors)} and attributes {values}, expected buffers {sorted(buffers)} "
            f"and integer attributes {list(ints)}")
    return tensors, values


def _exact(module: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> nn.Module:
    """Put the saved buffers into ``module`` as they are (dtype and shape included)."""
    for name, t in tensors.items():
        if t.shape != module._buffers[name].shape:
            raise UnsupportedLayerError(f"{where}: buffer '{name}' has shape {tuple(t.shape)}, "
                                        f"expected {tuple(module._buffers[name].shape)}")
        module._buffers[name] = t.detach().clone()
    return module


def _build(factory, where: str):
    try:
        return factory()
    except (ValueError, TypeError, RuntimeError) as e:
        raise UnsupportedLayerError(f"{where} has invalid parameters ({one_line(e)[:120]})") from None


def _multi_threshold(sub: Any, where: str) -> nn.Module:
    t, i = _neuron_state(sub, where, ("threshold", "v_init", "spike_value"),
                         ("max_spikes", "min_spikes", "timesteps"))
    neuron = _build(lambda: MultiThresholdIF(t["threshold"], i["max_spikes"], i["timesteps"], v_init=t["v_init"],
                                             min_spikes=i["min_spikes"], spike_value=t["spike_value"]), where)
    return _exact(neuron, t, where)


def _parallel(sub: Any, where: str) -> nn.Module:
    t, i = _neuron_state(sub, where, ("threshold", "v_init", "spike_value"), ("timesteps",))
    neuron = _build(lambda: ParallelNeuron(t["threshold"], i["timesteps"], v_init=t["v_init"],
                                           spike_value=t["spike_value"]), where)
    return _exact(neuron, t, where)


def _scale_and_fire(sub: Any, where: str) -> nn.Module:
    t, i = _neuron_state(sub, where, ("edges", "codes", "unit", "v_init"), ("timesteps",))
    if t["unit"].numel() != 1:
        raise UnsupportedLayerError(f"{where}: its code unit has shape {tuple(t['unit'].shape)}, expected a scalar")
    neuron = _build(lambda: ScaleAndFire(t["edges"], t["codes"], float(t["unit"]), i["timesteps"],
                                         v_init=t["v_init"]), where)
    return _exact(neuron, t, where)


def _product(sub: Any, where: str) -> nn.Module:
    _, i = _neuron_state(sub, where, (), ("heads", "timesteps"))
    mode, scale = getattr(sub, "mode", None), getattr(sub, "scale", None)
    if mode not in products.MODES or not isinstance(scale, float):
        raise UnsupportedLayerError(f"{where} has mode {mode!r} and scale {scale!r}; expected one of "
                                    f"{', '.join(products.MODES)} and a float")
    return _build(lambda: SpikingProduct(mode, i["heads"], scale, i["timesteps"]), where)


def _softmax(sub: Any, where: str) -> nn.Module:
    _, i = _neuron_state(sub, where, (), ("timesteps",))
    return _build(lambda: SpikingSoftmax(i["timesteps"]), where)


_NEURON_LEAVES = {"MultiThresholdIF": _multi_threshold, "ParallelNeuron": _parallel,
                  "ScaleAndFire": _scale_and_fire, "SpikingProduct": _product, "SpikingSoftmax": _softmax}
