"""A ``state_dict`` with ``--arch`` (loaded with ``weights_only=True``), or a whole pickled
``nn.Module`` with ``trust_pickle`` only (unpickling runs code from the file). ``--arch``
names the class (or factory) to build; its module is imported only after the name is checked.
"""

from __future__ import annotations

import pickle
import re
from typing import Any

import torch
from torch import nn

from n2c.ann.qcfs import QCFS
from n2c.errors import ModelLoadError
from n2c.ingest.files import ARCH_HINT
from n2c.ingest.files import one_line
from n2c.ingest.arch import instantiate_arch

_DATA_MODULES = {"numpy", "builtins", "collections", "argparse", "pathlib", "datetime", "enum", "_codecs"}


def load_pickle(path: str, arch: str | None, trust_pickle: bool) -> nn.Module:
    obj = _load_weights_only(path, trust_pickle)
    if isinstance(obj, nn.Module):
        return obj
    state = _state_dict_of(obj)
    if state is None:
        raise ModelLoadError(
            f"{path} holds a {type(obj).__name__}, not a model of any known format; save the model with "
            f"torch.jit.save, torch.export.save, or torch.save(model.state_dict()) plus {ARCH_HINT}")
    if isinstance(state, nn.Module):
        return state
    if arch is None:
        raise ModelLoadError(
            f"{path} is a state_dict (weights only, no architecture); pass {ARCH_HINT} naming the model class")
    model = instantiate_arch(arch)
    _load_state(model, state, path, arch)
    return model


def _load_weights_only(path: str, trust_pickle: bool) -> Any:
    """torch.load with ``weights_only=True``; fall back to full unpickling only if trusted."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        cls = pickled_class(str(e))
        if cls is None:
            raise ModelLoadError(
                f"{path} is not a model of any known format (unreadable: {one_line(e)[:160]})") from None
        if not trust_pickle:
            raise ModelLoadError(_pickle_refusal(path, cls)) from None
    except Exception as e:  # torch.load raises many types for foreign or corrupt files
        raise ModelLoadError(
            f"{path} is not a model of any known format or is corrupt ({one_line(e)[:160]}); "
            "save it with torch.save, torch.jit.save or torch.export.save") from None
    return _load_trusted(path)


def pickled_class(message: str) -> str | None:
    """The class a weights-only load refused, or None if the file is simply not a pickle."""
    m = re.search(r"Unsupported (?:class|global:?\s*(?:GLOBAL)?)\s*([\w.]+)", message)
    return m.group(1) if m else None


def _pickle_refusal(path: str, cls: str) -> str:
    fix = (f"Pass --trust-pickle if you trust its source, or save a state_dict and pass {ARCH_HINT}")
    if cls.split(".")[0] in _DATA_MODULES:
        return f"{path} contains pickled Python objects ({cls}); loading it runs arbitrary code. {fix}"
    return f"{path} is a pickled nn.Module ({cls}); loading it runs arbitrary code. {fix}"


def _load_trusted(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as e:
        raise ModelLoadError(
            f"cannot unpickle {path}: {one_line(e)}; make the package defining the model importable "
            f"(install it or add it to PYTHONPATH), or save a state_dict and pass {ARCH_HINT}") from None
    except Exception as e:
        raise ModelLoadError(f"cannot unpickle {path} ({one_line(e)[:160]}); save the model again") from None
_NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model")


def _state_dict_of(obj: Any) -> dict | nn.Module | None:
    """``obj`` itself if it is a state_dict, or the state_dict/module of a training checkpoint."""
    if not isinstance(obj, dict) or not obj:
        return None
    if all(isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    for key in _NESTED_STATE_KEYS:
        inner = obj.get(key)
        if isinstance(inner, nn.Module):
            return inner
        if isinstance(inner, dict) and _state_dict_of(inner) is inner:
            return inner
    return None


def _load_state(model: nn.Module, state: dict, path: str, arch: str) -> None:
    """load_state_dict(strict=True) with a one-line error that lists the mismatched keys."""
    own = model.state_dict()
    if not set(state) & set(own) and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelLoadError(
            f"the state_dict in {path} does not match --arch {arch} (wrong keys: missing {_few(missing)}, "
            f"unexpected {_few(unexpected)}); pass the class and arguments the weights were trained with")
    _fit_qcfs_thresholds(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelLoadError(
            f"the state_dict in {path} does not match --arch {arch} ({one_line(e)[:300]}); "
            "pass the class and arguments the weights were trained with") from None


def _fit_qcfs_thresholds(model: nn.Module, state: dict) -> None:
    """Give each QCFS λ the shape saved in ``state`` (per-channel vs scalar).

    The shape of λ is learnt data, not architecture: a model trained with
    per-channel thresholds loads into a class whose constructor makes a scalar λ
    (and vice versa). Every other shape mismatch is left to load_state_dict.
    """
    for name, m in model.named_modules():
        saved = state.get(f"{name}.lam" if name else "lam")
        if isinstance(m, QCFS) and isinstance(saved, torch.Tensor) and saved.shape != m.lam.shape \
                and saved.numel() > 0:
            m.lam = nn.Parameter(torch.empty(saved.shape, dtype=m.lam.dtype, device=m.lam.device))


def _few(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return f"[{shown}{', ...' if len(keys) > n else ''}]"
