"""Files the commands read and write: input arrays (never unpickled), atomic output, output paths."""

from __future__ import annotations

from n2c.errors import N2CError


def load_input_array(path: str):
    """An .npy array, read without unpickling (object arrays are refused), memory-mapped: the
    simulators read it a chunk at a time."""
    import os

    import numpy as np

    if not os.path.isfile(path):
        raise N2CError(f"input file {path} does not exist")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise N2CError(f"{path} is not a .npy array; save your input with np.save")
    _check_declared_size(path)
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as e:
        if "pickle" in str(e) or "Python objects" in str(e):
            raise N2CError(f"{path} holds Python objects (a pickle); save a numeric array with np.save") from None
        raise N2CError(f"{path} is not a readable .npy array ({str(e).splitlines()[0][:120]}); "
                       "save it with np.save") from None
    except OSError as e:
        raise N2CError(f"{path} is not a readable .npy array ({e.__class__.__name__}); save it with np.save") from None


def save_array(array, path: str) -> None:
    """np.save, atomically: a failed write leaves nothing behind."""
    import numpy as np

    from n2c.files import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the name
            np.save(f, array)
    atomic_write(path, write)


def save_arrays(arrays: dict, path: str) -> None:
    """np.savez of named arrays, atomically."""
    import numpy as np

    from n2c.files import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to the name
            np.savez(f, **arrays)
    atomic_write(path, write)


def _check_declared_size(path: str) -> None:
    """The header's shape and dtype against the file's size and n2c's limit, before np.load allocates."""
    import os

    import numpy as np

    from n2c.limits import MAX_RUN_BYTES, elements

    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            shape, _, dtype = np.lib.format._read_array_header(f, version)  # public read_array_header_{1,2}_0
            offset = f.tell()
    except (ValueError, OSError, SyntaxError, TypeError) as e:
        raise N2CError(f"{path} has an unreadable .npy header ({' '.join(str(e).split())[:120]}); save it with "
                       "np.save") from None
    if dtype.hasobject:
        raise N2CError(f"{path} holds Python objects (a pickle); save a numeric array with np.save")
    need = elements(shape) * dtype.itemsize
    if need > MAX_RUN_BYTES:
        raise N2CError(f"{path} declares a {shape} {dtype} array ({need / 2 ** 30:.1f} GiB), over n2c's limit of "
                       f"{MAX_RUN_BYTES / 2 ** 30:.0f} GiB; give a smaller input")
    if os.path.getsize(path) - offset < need:
        raise N2CError(f"{path} declares a {shape} {dtype} array ({need:,} bytes) but holds only "
                       f"{os.path.getsize(path) - offset:,}; the file is truncated or damaged, save it again")
