"""What a model file is, before anything in it is loaded: readable, which format (by content,
not by name), and whether it is a converted SNN (n2c.snn.io), which is not a model to convert.
"""

from __future__ import annotations

import io
import logging
import os
import pickletools
import re
import zipfile
import zlib
from contextlib import contextmanager

from n2c.errors import ModelLoadError

ARCH_HINT = "--arch package.module:ClassName"
EXPORT_HINT = f"export a state_dict (torch.save(model.state_dict(), path)) and pass {ARCH_HINT} instead"
SNN_CLASS = "ScriptableSNN"  # the root class of the SNN files n2c.snn.io writes
# The qualified TorchScript name of ScriptableSNN (scripting one class for graphs of
# different types mangles it: __torch__.n2c.snn.io.___torch_mangle_7.ScriptableSNN). Files
# written before n2c 0.2 name the module n2c.snn_io; they load the same.
_SNN_QUALNAME = re.compile(r"__torch__\.n2c\.snn(_|\.)io(\.___torch_mangle_\d+)?")


def is_snn_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive whose root module is a :class:`ScriptableSNN`.

    Cheap: reads the zip directory and the first opcodes of the root pickle, runs
    nothing. False for anything else, including unreadable files.
    """
    try:
        return root_class(os.fspath(path)) == SNN_CLASS
    except Exception:  # unreadable or malformed: not a (usable) SNN file
        return False


def root_class(path: str) -> str | None:
    """The class name of a TorchScript archive's root module if it is n2c's, else its
    qualified name, or None for files that are not TorchScript archives."""
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        roots = {n.split("/", 1)[0] for n in names if n.count("/") == 1 and n.endswith("/constants.pkl")}
        data = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl") and n.split("/")[0] in roots]
        if len(data) != 1:
            return None
        with z.open(data[0]) as f:
            head = f.read(4096)
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(head)):
            if op.name == "GLOBAL":
                module, _, cls = str(arg).partition(" ")
                if _SNN_QUALNAME.fullmatch(module) and cls == SNN_CLASS:
                    return cls
                return re.sub(r"^__torch__\.|___torch_mangle_\d+\.", "", f"{module}.{cls}")
            if op.name == "STACK_GLOBAL":
                return None
    except (ValueError, EOFError):
        pass
    return None


def refuse_snn(path: str) -> None:
    """A converted SNN (n2c.snn.io.save_snn) is not a model to convert again."""
    if is_snn_file(path):
        raise ModelLoadError(
            f"{path} is a converted SNN (written by n2c convert), not a model to convert; pass it to "
            "`n2c export`, or load it with n2c.snn.io.load_snn")


def check_readable(path: str, what: str, directory_hint: str, empty_hint: str) -> None:
    """One-line ModelLoadErrors for a missing, directory, unreadable or empty file."""
    if not os.path.exists(path):
        raise ModelLoadError(f"{what} {path} does not exist; check the path")
    if os.path.isdir(path):
        raise ModelLoadError(f"{path} is a directory; {directory_hint}")
    if not os.access(path, os.R_OK):
        raise ModelLoadError(f"cannot read {path}: permission denied; check the file's permissions")
    if os.path.getsize(path) == 0:
        raise ModelLoadError(f"{path} is empty (0 bytes); {empty_hint}")


def check_file(path: str) -> None:
    check_readable(path, "model file", "pass the model file inside it (.pt, .pth or .pt2)",
                   "the save was probably interrupted, save the model again")


def sniff(path: str) -> str:
    """``"torchscript"``, ``"export"`` or ``"pickle"`` (torch.save, new or legacy, or unknown)."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if not zipfile.is_zipfile(path):
        if magic == b"PK\x03\x04":
            raise ModelLoadError(f"{path} is a truncated or corrupt zip archive; save the model again")
        return "pickle"
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            damaged = z.testzip()  # reads every member and checks its CRC-32
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, NotImplementedError) as e:
        raise ModelLoadError(f"{path} is a corrupt zip archive ({one_line(e)[:120]}); save the model again") from None
    if damaged is not None:
        raise ModelLoadError(f"{path} is damaged: member {damaged} fails its CRC check; save the model again")
    if any(n.rsplit("/", 1)[-1] in ("serialized_exported_program.json", "archive_format") for n in names):
        return "export"
    if any(n.endswith("/constants.pkl") or "/code/__torch__" in n for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "pickle"
    raise ModelLoadError(
        f"{path} is a zip archive but not a PyTorch model (no TorchScript code, exported program or "
        "torch.save data); save the model with torch.jit.save, torch.export.save or torch.save")


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


@contextmanager
def quiet(logger_name: str):
    """Silence a chatty torch logger (torch.export.load warns about unused symbols)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
