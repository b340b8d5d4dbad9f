"""Writing output files: checked before the work, written atomically (a failure never leaves a
partial file behind), with the permissions the user's umask gives, as ``open()`` would.

One rule for every command: an output's directory must exist (n2c creates no missing parents);
``n2c report -o DIR`` and ``n2c demo -o DIR`` create DIR itself.
"""

from __future__ import annotations

import os
import secrets
from typing import Callable

from n2c.errors import N2CError

_TMP_NAME = 64  # characters of the final name kept in the temporary file's name


def check_output_file(path: str | os.PathLike) -> None:
    """Raise a one-line N2CError, before any work, if ``path`` cannot be written as a file."""
    path = os.fspath(path)
    full = os.path.abspath(path)
    directory, name = os.path.split(full)
    if os.path.isdir(full):
        raise N2CError(f"output {path} is a directory; pass a file name, e.g. -o {os.path.join(path, 'out.nir')}")
    check_output_dir(directory, create=False)
    limit = _name_max(directory)
    if len(name.encode()) > limit:
        raise N2CError(f"output file name {name[:40]}... has {len(name.encode())} bytes, over this file system's "
                       f"limit of {limit}; choose a shorter name")
    if os.path.exists(full) and not os.access(full, os.W_OK):
        raise N2CError(f"output {path} exists and is not writable; choose another path or change its permissions")


def check_output_dir(directory: str | os.PathLike, create: bool) -> None:
    """The directory exists and is writable (or, with ``create``, its parent does)."""
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise N2CError(f"output {directory} is a file, not a directory; choose a directory")
    if not os.path.exists(directory):
        parent = os.path.dirname(directory)
        if not create or not os.path.isdir(parent):
            raise N2CError(f"output directory {directory if not create else parent} does not exist; create it or "
                           "choose another output path")
        directory = parent
    if not os.access(directory, os.W_OK | os.X_OK):
        raise N2CError(f"output directory {directory} is not writable; choose another output path")


def make_output_dir(directory: str | os.PathLike) -> None:
    """Create the output directory itself (never its parents), after :func:`check_output_dir`."""
    check_output_dir(directory, create=True)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise N2CError(f"cannot create output directory {directory} ({e.strerror}); choose another path") from None


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Run ``write(tmp)`` on a temporary file beside ``path``, then move it into place with
    ``os.replace``: ``path`` is the old file or the complete new one. The file gets the mode
    ``open()`` would give it (0o666 less the umask). On any failure the temporary file is removed;
    an ``OSError`` becomes a one-line N2CError, any other error is re-raised."""
    path = os.fspath(path)
    check_output_file(path)
    tmp = _temporary(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise N2CError(f"cannot write {path} ({e.strerror or e}); check the path and free space") from None
        raise


def _temporary(path: str) -> str:
    """A new empty file beside ``path`` (O_EXCL), its name short enough for any final name."""
    directory, name = os.path.split(os.path.abspath(path))
    for _ in range(100):
        tmp = os.path.join(directory, f".{name[:_TMP_NAME]}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return tmp
        except FileExistsError:
            continue
        except OSError as e:
            raise N2CError(f"cannot write in {directory} ({e.strerror}); choose another output path") from None
    raise N2CError(f"cannot create a temporary file in {directory}; choose another output path")


def _name_max(directory: str) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
