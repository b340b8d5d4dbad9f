"""n2c.snn.io: a saved SNN loads back bit for bit, runs under plain torch.jit.load,
and every bad file fails with a one-line ModelLoadError.

The SNNs are built directly from the neuron modules of n2c.snn.modules (canonical fx
graphs via n2c.ingest.canonical.canonicalize), one per neuron kind and feature: multi-spike
IF with and without negative spikes, per-channel parallel neurons whose spike
value differs from the threshold, scale-and-fire, a residual addition, nested
module names and a max-pool on the analog input. One more is a real conversion.
"""

from __future__ import annotations

import os
import zipfile

import pytest
import torch
from torch import nn

from n2c.errors import ModelLoadError, N2CError, UnsupportedLayerError
from n2c.ingest.canonical import canonicalize
from n2c.ingest import load_model
from n2c.snn.modules import NEURON_TYPES, MultiThresholdIF, ParallelNeuron, ScaleAndFire, SpikingNetwork
from n2c.snn.io import FORMAT_VERSION, ScriptableSNN, is_snn_file, load_snn, save_snn

torch.set_num_threads(2)
T = 4


def _rand(*shape, lo=0.3, hi=1.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(shape, generator=g)


class Plain(nn.Module):
    """conv → MultiThresholdIF → avgpool → flatten → linear."""

    def __init__(self, min_spikes: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.neuron = MultiThresholdIF(_rand(4, 1, 1), 2, T, min_spikes=min_spikes)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.neuron(self.conv(x))), 1))


class Residual(nn.Module):
    """MaxPool on the analog input, nested names, y = n2(conv2(n1(conv1(x)))) + n1(conv1(x))."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(1, 4, 3, padding=1),
                                  MultiThresholdIF(0.7, 1, T, v_init=0.2))
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), MultiThresholdIF(_rand(4, 1, 1, seed=1), 3, T))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        y = self.stem(x)
        return self.head(self.block(y) + y)


class Parallel(nn.Module):
    """Parallel neurons: per-channel θ (C, 1, 1), spike value θ + φ ≠ θ, v_init θ/2 + T·ψ."""

    def __init__(self):
        super().__init__()
        theta = _rand(4, 1, 1, seed=2)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.neuron = ParallelNeuron(theta, T, v_init=theta / 2 + T * _rand(4, 1, 1, lo=-0.1, hi=0.1, seed=3),
                                     spike_value=theta + _rand(4, 1, 1, lo=-0.2, hi=0.2, seed=4))
        self.fc1 = nn.Linear(4 * 8 * 8, 6)
        self.out = ParallelNeuron(_rand(6, seed=5), T)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(self.out(self.fc1(torch.flatten(self.neuron(self.conv(x)), 1))))


class ScaleFire(nn.Module):
    """Scale-and-fire with signed, non-uniform codes and a non-zero initial potential."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.neuron = ScaleAndFire(torch.tensor([-0.6, -0.1, 0.2, 0.5, 1.1]), torch.tensor([-3., -1., 0., 1., 2., 5.]),
                                   0.21, T, v_init=0.05)
        self.fc = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x):
        return self.fc(self.neuron(self.conv(x)).flatten(1))


def _snn(module_cls, *args, method="mtn") -> SpikingNetwork:
    torch.manual_seed(7)
    return SpikingNetwork(canonicalize(module_cls(*args).eval()), T, method).eval()


SNNS = {
    "plain": lambda: _snn(Plain),
    "signed_spikes": lambda: _snn(Plain, 2, method="pmsm"),
    "residual": lambda: _snn(Residual),
    "parallel": lambda: _snn(Parallel, method="parallel"),
    "scale_and_fire": lambda: _snn(ScaleFire, method="sfn"),
}
X = torch.randn(5, 1, 8, 8) * 2


def _neuron_attrs(m: nn.Module) -> dict:
    return {k: getattr(m, k) for k in ("max_spikes", "min_spikes", "timesteps") if hasattr(m, k)}


def _assert_same_network(a: SpikingNetwork, b: SpikingNetwork) -> None:
    assert (b.timesteps, b.method) == (a.timesteps, a.method)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert state_a[key].dtype == state_b[key].dtype and torch.equal(state_a[key], state_b[key]), key
    modules_a = {n: m for n, m in a.graph_module.named_modules() if not list(m.children())}
    modules_b = {n: m for n, m in b.graph_module.named_modules() if not list(m.children())}
    assert {n: type(m) for n, m in modules_a.items()} == {n: type(m) for n, m in modules_b.items()}
    for name, m in modules_a.items():
        if isinstance(m, NEURON_TYPES):
            assert _neuron_attrs(modules_b[name]) == _neuron_attrs(m)
        else:
            assert repr(modules_b[name]) == repr(m)  # hyper-parameters (kernel, stride, padding, ...)


@pytest.mark.parametrize("name", SNNS)
def test_round_trip_is_exact(tmp_path, name):
    snn = SNNS[name]()
    path = tmp_path / "snn.pt"
    save_snn(snn, path)
    assert is_snn_file(path)
    loaded = load_snn(path)

    assert isinstance(loaded, SpikingNetwork) and not loaded.training
    _assert_same_network(snn, loaded)
    with torch.no_grad():
        expected = snn(X)
        assert torch.equal(loaded(X), expected)
        assert torch.equal(loaded(X[:1]), snn(X[:1]))  # another batch size
        script = torch.jit.load(str(path))
        for _ in range(3):  # the profiling executor optimises after the first runs
            assert torch.equal(script(X), expected)
    assert script.n2c_timesteps == T and script.n2c_method == snn.method
    assert script.n2c_format_version == FORMAT_VERSION
    assert script.original_name == "ScriptableSNN"
    assert canonicalize(loaded.graph_module) is loaded.graph_module  # already canonical


def test_negative_spikes_are_exercised():
    snn = SNNS["signed_spikes"]()
    neuron = snn.graph_module.get_submodule("neuron")
    steps = snn.graph_module.get_submodule("conv")(X.repeat(T, 1, 1, 1))
    assert neuron.min_spikes == 2 and (neuron.counts(steps) < 0).any()


def test_graph_and_names_are_kept(tmp_path):
    snn = SNNS["residual"]()
    save_snn(snn, tmp_path / "r.pt")
    loaded = load_snn(tmp_path / "r.pt")
    ops = [(n.op, n.target) for n in loaded.graph_module.graph.nodes]
    assert ops == [(n.op, n.target) for n in snn.graph_module.graph.nodes]
    assert set(loaded.neurons()) == set(snn.neurons()) == {"stem.2", "block.1"}


def test_real_conversion_round_trips(tmp_path):
    from n2c.snn.convert import convert
    from n2c.models import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN(levels=4).eval()
    snn = convert(model, "mtn", timesteps=2)
    save_snn(snn, tmp_path / "digits.pt")
    loaded = load_snn(tmp_path / "digits.pt")
    _assert_same_network(snn, loaded)
    x = torch.rand(4, 1, 8, 8) * 16
    with torch.no_grad():
        assert torch.equal(loaded(x), snn(x))
        assert torch.equal(torch.jit.load(str(tmp_path / "digits.pt"))(x), snn(x))


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "snn.pt"
    save_snn(SNNS["plain"](), path)
    save_snn(SNNS["parallel"](), path)
    assert load_snn(path).method == "parallel"
    assert os.listdir(tmp_path) == ["snn.pt"]


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "snn.pt"
    save_snn(SNNS["plain"](), path)
    before = path.read_bytes()

    def broken_save(module, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.jit, "save", broken_save)
    with pytest.raises(N2CError, match="No space left on device"):
        save_snn(SNNS["parallel"](), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["snn.pt"]

    with pytest.raises(N2CError, match="cannot write"):
        save_snn(SNNS["plain"](), tmp_path / "no_such_dir" / "snn.pt")
    with pytest.raises(N2CError, match="is a directory"):
        save_snn(SNNS["plain"](), tmp_path)
    assert os.listdir(tmp_path) == ["snn.pt"]


def test_unloadable_graph_is_not_written(tmp_path):
    """A layer n2c cannot rebuild is refused at save time, not discovered at load time."""
    gm = canonicalize(nn.Sequential(nn.Linear(4, 3), MultiThresholdIF(0.5, 1, T)))
    gm.add_submodule("1", nn.Sigmoid())
    gm.recompile()
    with pytest.raises(UnsupportedLayerError, match="aten::sigmoid"):
        save_snn(SpikingNetwork(gm, T), tmp_path / "s.pt")
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------ bad files

def _raises(phrase: str, path) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_snn(path)
    message = str(info.value)
    assert phrase in message, message
    assert "\n" not in message
    return message


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "snn.pt"
    save_snn(SNNS["plain"](), path)
    return path


def test_missing_and_empty(tmp_path):
    _raises("does not exist", tmp_path / "nope.pt")
    _raises("is a directory", tmp_path)
    (tmp_path / "empty.pt").write_bytes(b"")
    _raises("is empty", tmp_path / "empty.pt")


def test_truncated(tmp_path, saved):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(saved.read_bytes()[:3000])
    assert not is_snn_file(cut)
    message = _raises("truncated or corrupt", cut)
    assert "n2c convert" in message


def test_corrupt_code(tmp_path, saved):
    """A zip whose TorchScript code is damaged."""
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith(".py") and "snn/io" in item.filename:
                data = b"def forward(self, x: Tensor) -> Tensor:\n  return (((\n"
            dst.writestr(item, data)
    assert is_snn_file(bad)  # it still says it is one
    _raises("corrupt", bad)


def test_garbage_and_foreign_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not an snn\x00\x01")
    _raises("not a saved n2c SNN", tmp_path / "junk.pt")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    _raises("not a saved n2c SNN", tmp_path / "other.zip")
    torch.save({"w": torch.zeros(2)}, tmp_path / "weights.pt")
    _raises("not TorchScript", tmp_path / "weights.pt")
    for name in ("junk.pt", "other.zip", "weights.pt", "nope.pt"):
        assert not is_snn_file(tmp_path / name)
    assert not is_snn_file(tmp_path)


def test_torchscript_model_is_not_an_snn(tmp_path):
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(4, 3), nn.ReLU())), tmp_path / "ann.pt")
    assert not is_snn_file(tmp_path / "ann.pt")
    message = _raises("not a saved n2c SNN", tmp_path / "ann.pt")
    assert "n2c convert" in message
    assert load_model(str(tmp_path / "ann.pt")) is not None  # still a fine model to convert


def test_newer_format_version(tmp_path):
    snn = SNNS["plain"]()
    wrapper = ScriptableSNN(snn.graph_module, T, "mtn")
    wrapper.n2c_format_version = FORMAT_VERSION + 1
    torch.jit.save(torch.jit.script(wrapper), tmp_path / "future.pt")
    assert is_snn_file(tmp_path / "future.pt")
    message = _raises("newer n2c", tmp_path / "future.pt")
    assert f"version {FORMAT_VERSION + 1}" in message and "upgrade n2c" in message


def test_load_model_refuses_an_snn(saved):
    with pytest.raises(ModelLoadError, match="converted SNN.*n2c export.*load_snn"):
        load_model(str(saved))
