"""Files the commands read and write: input arrays (never unpickled), atomic output, output paths."""

from __future__ import annotations

from n2c.errors import N2CError


def load_input_array(path: str):
    """An .npy array, read without unpickling (object arrays are refused)."""
    import os

    import numpy as np

    if not os.path.isfile(path):
        raise N2CError(f"input file {path} does not exist")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise N2CError(f"{path} is not a .npy array; save your input with np.save")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise N2CError(f"{path} holds Python objects (a pickle); save a numeric array with np.save") from None
        raise N2CError(f"{path} is not a readable .npy array ({str(e).splitlines()[0][:120]}); "
                       "save it with np.save") from None
    except OSError as e:
        raise N2CError(f"{path} is not a readable .npy array ({e.__class__.__name__}); save it with np.save") from None


def save_array(array, path: str) -> None:
    """np.save, atomically: a failed write leaves nothing behind."""
    import numpy as np

    from n2c.files import atomic_write

    writable_output(path)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the name
            np.save(f, array)
    atomic_write(path, write)


def writable_output(path: str) -> None:
    """Fail before training, not after, when the checkpoint cannot be written."""
    import os

    full = os.path.abspath(path)
    directory = os.path.dirname(full)
    if os.path.isdir(full):
        raise N2CError(f"output {path} is a directory; pass a file name, e.g. -o {os.path.join(path, 'model.pt')}")
    if not os.path.isdir(directory):
        raise N2CError(f"output directory {directory} does not exist; create it or choose another -o path")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise N2CError(f"output directory {directory} is not writable; choose another -o path")
