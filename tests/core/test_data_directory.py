"""User data larger than memory: a directory of .npy files (x.npy, y.npy, input_scale.npy),
memory-mapped. Every command gives what the same arrays give as an .npz; bad directories are
one-line errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from n2c import data as data_module
from n2c.cli.main import main
from n2c.data import load_dataset, training_and_evaluation
from n2c.errors import DatasetError


def _arrays(n=60, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, n)


def _write(tmp_path, x, y, scale=None, name="mine"):
    """The same arrays as an .npz file and as a directory."""
    root = tmp_path / name
    root.mkdir()
    np.save(root / "x.npy", x)
    np.save(root / "y.npy", y)
    members = dict(x=x, y=y)
    if scale is not None:
        np.save(root / "input_scale.npy", np.array(scale))
        members["input_scale"] = np.array(scale)
    np.savez(tmp_path / f"{name}.npz", **members)
    return str(root), str(tmp_path / f"{name}.npz")


def test_a_directory_is_memory_mapped_and_equals_its_npz(tmp_path):
    x, y = _arrays()
    directory, npz = _write(tmp_path, x, y, scale=1 / 64)
    mapped, loaded = load_dataset(directory), load_dataset(npz)
    assert isinstance(mapped.x, np.memmap) and isinstance(mapped.head(5).x, np.memmap)  # slices stay on disk
    assert np.array_equal(mapped.x, loaded.x) and np.array_equal(mapped.y, loaded.y)
    assert (mapped.input_scale, mapped.num_classes) == (loaded.input_scale, loaded.num_classes) == (1 / 64, 10)
    train, held, what = training_and_evaluation(directory)
    assert (len(train), len(held)) == (54, 6) and "held-out" in what and isinstance(train.x, np.memmap)


def test_training_and_simulation_on_a_directory_equal_the_npz(tmp_path, capsys, digits_nir):
    """Training reads the mapped x batch by batch: the trained weights are the .npz run's, bit for bit."""
    x, y = _arrays(n=80)
    directory, npz = _write(tmp_path, x, y)
    for source, out in ((directory, "dir.pt"), (npz, "npz.pt")):
        assert main(["train", "--model-name", "digits-cnn", "--dataset", source, "--levels", "4", "--epochs", "1",
                     "-o", str(tmp_path / out)]) == 0
    capsys.readouterr()
    a, b = (torch.jit.load(str(tmp_path / name)).state_dict() for name in ("dir.pt", "npz.pt"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    digits = load_dataset("digits")  # a digits graph on digits samples, from both sources
    directory, npz = _write(tmp_path, digits.x[:40], digits.y[:40], scale=digits.input_scale, name="digits")
    results = []
    for source in (directory, npz):
        assert main(["simulate", str(digits_nir), "--dataset", source, "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0]["predictions"] == results[1]["predictions"] and results[0]["samples"] == 40


@pytest.mark.parametrize("damage, message", [
    ("no_y", "must hold x.npy .* and y.npy"),
    ("int_x", "holds int64; memory-mapped data must be float32"),
    ("float_y", "labels must be integers"),
    ("bad_scale", "input_scale.npy must hold one positive number"),
    ("truncated_x", "is not a readable .npy array"),
    ("object_y", "is not a readable .npy array"),
    ("fortran_x", "Fortran order"),
    ("late_nan", "x contains NaN or infinity"),
    ("short_y", r"x must be \(N, C, H, W\) and y \(N,\)"),
    ("negative_y", "labels y must be class indices"),
    ("huge_y", "y.npy is not a readable .npy array .*mmap length is greater than file size"),
])
def test_a_bad_directory_is_a_one_line_error(tmp_path, monkeypatch, capsys, damage, message):
    x, y = _arrays()
    directory, _ = _write(tmp_path, x, y)
    root = tmp_path / "mine"
    if damage == "no_y":
        (root / "y.npy").unlink()
    elif damage == "int_x":
        np.save(root / "x.npy", (x * 10).astype(np.int64))
    elif damage == "float_y":
        np.save(root / "y.npy", y.astype(np.float32))
    elif damage == "bad_scale":
        np.save(root / "input_scale.npy", np.array([-1.0, 2.0]))
    elif damage == "truncated_x":
        raw = (root / "x.npy").read_bytes()
        (root / "x.npy").write_bytes(raw[:len(raw) // 2])
    elif damage == "object_y":
        np.save(root / "y.npy", np.array([1, None] * 30, dtype=object), allow_pickle=True)
    elif damage == "fortran_x":
        np.save(root / "x.npy", np.asfortranarray(x))
    elif damage == "late_nan":  # in the last chunk: every chunk is checked
        monkeypatch.setattr(data_module, "CHUNK", 7)
        x[-1, 0, 3, 3] = np.nan
        np.save(root / "x.npy", x)
    elif damage == "short_y":
        np.save(root / "y.npy", y[:-1])
    elif damage == "negative_y":
        np.save(root / "y.npy", y - 5)
    elif damage == "huge_y":  # a header declaring 10^12 labels: refused before anything that size is read
        with open(root / "y.npy", "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (10 ** 12,)})
            f.write(b"\0" * 64)
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(directory)
    assert "\n" not in str(info.value)
    out = tmp_path / "model.pt"  # the CLI: exit code 2, one line, nothing written
    assert main(["train", "--model-name", "digits-cnn", "--dataset", directory, "--epochs", "1", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("n2c: error: ") and re.search(message, err[0]), err
    assert not out.exists()


def test_an_unknown_name_says_what_a_data_set_can_be(tmp_path):
    with pytest.raises(DatasetError, match="an .npz file or a directory with x.npy and y.npy"):
        load_dataset(str(tmp_path / "nothing-here"))
