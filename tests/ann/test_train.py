"""Training for conversion: ReLU → quantizer, fine-tuning, checkpoints, the reference
architectures and ``n2c train``. Small subsets and few epochs keep this file fast."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from n2c.cli.main import main
from n2c.errors import CalibrationError
from n2c.ingest.canonical import canonicalize
from n2c.ingest import load_model
from n2c.models import DigitsCNN, ResNetStyle, VGGStyle, build_model
from n2c.ann.qcfs import QCFS, SignedQCFS
from n2c.ann.train import accuracy, fine_tune, fit, predict, relu_to_quantizer, save_checkpoint

torch.set_num_threads(2)


class AllReluForms(nn.Module):
    """One ReLU of every form, and one nn.ReLU module called twice."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3, self.c4, self.c5 = (nn.Conv2d(1 if i == 0 else 3, 3, 3, padding=1)
                                                       for i in range(5))
        self.relu = nn.ReLU()
        self.relu_inplace = nn.ReLU(inplace=True)
        self.fc = nn.Linear(3 * 64, 10)

    def pre_activations(self, x):
        """Every ReLU's input, in order, computed without hooks."""
        zs = []
        for conv in (self.c1, self.c2, self.c3, self.c4, self.c5):
            z = conv(x)
            zs.append(z)
            x = torch.relu(z)
        zs.append(self.fc(x.flatten(1)))
        return zs

    def forward(self, x):
        x = self.relu(self.c1(x))
        x = F.relu(self.c2(x))
        x = torch.relu(self.c3(x))
        x = self.relu_inplace(self.c4(x))
        x = self.relu(self.c5(x))  # the same module a second time
        return F.relu(self.fc(x.flatten(1)), inplace=True)


def _forms(seed: int = 0) -> AllReluForms:
    torch.manual_seed(seed)
    return AllReluForms().eval()


def _quantizers(model):
    return [m for m in model.modules() if isinstance(m, QCFS)]


@pytest.mark.parametrize("quantizer", ["qcfs", "signed"])
def test_relu_to_quantizer_replaces_every_form_with_the_percentile(quantizer, digits_train):
    model, calib = _forms(), digits_train.head(64)
    q = relu_to_quantizer(model, 4, quantizer, calib, percentile=99.0)
    assert isinstance(q, fx.GraphModule)
    assert not [m for m in q.modules() if isinstance(m, nn.ReLU)]
    quantizers = _quantizers(q)
    assert len(quantizers) == 6 and len({id(m) for m in quantizers}) == 6  # the shared ReLU is split
    cls = SignedQCFS if quantizer == "signed" else QCFS
    assert all(type(m) is cls and int(m.levels) == 4 for m in quantizers)
    with torch.no_grad():
        zs = model.pre_activations(torch.from_numpy(calib.x))
    expected = [np.percentile((z.abs() if quantizer == "signed" else z).numpy(), 99.0) for z in zs]
    # graph order = call order: λ of the i-th quantizer called is the percentile of the i-th ReLU input
    called = [q.get_submodule(n.target) for n in q.graph.nodes
              if n.op == "call_module" and isinstance(q.get_submodule(n.target), QCFS)]
    np.testing.assert_allclose([float(m.lam) for m in called], expected, rtol=1e-5)
    assert any(isinstance(m, nn.ReLU) for m in model.modules())  # the original is untouched


def test_relu_to_quantizer_float_lambda_and_errors(digits_train):
    q = relu_to_quantizer(_forms(), 8, "qcfs", lam_init=1.5)
    assert [float(m.lam) for m in _quantizers(q)] == [1.5] * 6
    model, calib = _forms(), digits_train.head(16)
    q = relu_to_quantizer(model, 8, "qcfs", calib, lam_init="max")
    with torch.no_grad():
        z1 = model.c1(torch.from_numpy(calib.x))
    assert float(q.relu.lam) == pytest.approx(float(z1.max()))
    with pytest.raises(CalibrationError, match="calibration data"):
        relu_to_quantizer(_forms(), 8, "qcfs", calib=None)
    dead = _forms()
    with torch.no_grad():
        dead.c1.weight.zero_()
        dead.c1.bias.fill_(-1.0)
    with pytest.raises(CalibrationError, match="ReLU 'relu' never sees a positive input"):
        relu_to_quantizer(dead, 8, "qcfs", digits_train.head(32))


@pytest.fixture(scope="module")
def relu_digits(digits_train):
    """A ReLU DigitsCNN pre-trained for a few epochs."""
    torch.manual_seed(0)
    return fit(DigitsCNN(levels=None), digits_train, epochs=10, lr=1e-2, batch_size=64, progress=False)


def test_fine_tune_keeps_accuracy_and_is_deterministic(relu_digits, digits_train, digits_test):
    relu_acc = accuracy(predict(relu_digits, digits_test.x), digits_test.y)
    q = fine_tune(relu_digits, digits_train, levels=8, epochs=2, lr=1e-3, batch_size=64, progress=False)
    assert not q.training and len(_quantizers(q)) == 3
    assert not [m for m in q.modules() if isinstance(m, nn.ReLU)]
    q_acc = accuracy(predict(q, digits_test.x), digits_test.y)
    assert q_acc > 0.8 and q_acc > relu_acc - 0.05, (relu_acc, q_acc)
    small = digits_train.head(128)
    a = fine_tune(relu_digits, small, levels=4, epochs=1, seed=3, progress=False)
    b = fine_tune(relu_digits, small, levels=4, epochs=1, seed=3, progress=False)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def _randomized(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and λ, so that a lossy round trip shows."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.2, generator=gen)
            if isinstance(m, QCFS):
                m.lam.uniform_(0.5, 2.0, generator=gen)
    return model.eval()


ROUND_TRIP = [(cls, act) for cls in (VGGStyle, ResNetStyle) for act in ("qcfs", "signed")]


@pytest.mark.parametrize("cls,act", ROUND_TRIP, ids=[f"{c.__name__}-{a}" for c, a in ROUND_TRIP])
def test_checkpoint_round_trip_through_load_model(cls, act, tmp_path):
    torch.manual_seed(0)
    model = _randomized(cls(in_channels=1, image_size=8, width=4, act=act, levels=4))
    path = tmp_path / "model.pt"
    save_checkpoint(model, path, (1, 8, 8))
    assert os.listdir(tmp_path) == ["model.pt"]  # no temporary file left behind
    loaded = load_model(str(path))
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert len(_quantizers(loaded)) == len(_quantizers(model))


def test_checkpoint_of_a_fine_tuned_graph_module_and_per_channel_lambda(relu_digits, digits_train, tmp_path):
    q = relu_to_quantizer(relu_digits, 8, "qcfs", digits_train.head(64))
    first = _quantizers(q)[0]
    with torch.no_grad():
        first.lam = nn.Parameter(torch.linspace(0.5, 2.0, 16).reshape(16, 1, 1))
    path = tmp_path / "ft.pt"
    save_checkpoint(q, path, (1, 8, 8))
    x = torch.from_numpy(digits_train.x[:32])
    with torch.no_grad():
        assert torch.equal(load_model(str(path))(x), q(x))


@pytest.mark.parametrize("name", ["vgg", "resnet", "digits-cnn"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8)])
@pytest.mark.parametrize("act", ["relu", "qcfs", "signed"])
def test_reference_architectures_shapes_and_canonical_form(name, shape, act):
    model = build_model(name, shape, 10, act=act, levels=4, width=4).eval()
    x = torch.rand(3, *shape)
    assert model(x).shape == (3, 10)
    gm = canonicalize(model)
    torch.testing.assert_close(gm(x), model(x))
    acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, QCFS))]
    assert len({id(m) for m in acts}) == len(acts)  # one module per activation
    expected = {"relu": nn.ReLU, "qcfs": QCFS, "signed": SignedQCFS}[act]
    assert all(type(m) is expected for m in acts)


def test_resnet_has_residual_adds_and_projection_shortcuts():
    gm = canonicalize(ResNetStyle(image_size=8, width=4))
    adds = [n for n in gm.graph.nodes if n.op == "call_function"]
    assert len(adds) == 3
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in gm.modules()) == 2
    assert not any(isinstance(m, nn.MaxPool2d) for m in gm.modules())


# ------------------------------------------------------------------------------ CLI

def test_cli_train_has_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0 and "usage: n2c train" in capsys.readouterr().out


def test_cli_train_from_scratch_then_export(tmp_path, capsys):
    out, nir = tmp_path / "d.pt", tmp_path / "d.nir"
    assert main(["train", "--model-name", "digits-cnn", "--dataset", "digits", "--levels", "8", "--epochs", "1",
                 "--samples", "256", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train accuracy" in printed and "test accuracy" in printed
    assert os.listdir(tmp_path) == ["d.pt"]
    assert main(["export", str(out), "-o", str(nir), "--dataset", "digits"]) == 0
    assert nir.exists()


def test_cli_fine_tunes_a_relu_state_dict(relu_digits, tmp_path, capsys):
    sd = tmp_path / "relu.pt"
    torch.save(relu_digits.state_dict(), sd)
    out = tmp_path / "q.pt"
    assert main(["train", str(sd), "--arch", "n2c.models:DigitsCNN(levels=None)", "--dataset", "digits",
                 "--quantizer", "qcfs", "--levels", "4", "--epochs", "1", "--samples", "256", "-o", str(out)]) == 0
    test_acc = float(capsys.readouterr().out.split("test accuracy ")[1].split(" %")[0])
    assert test_acc > 80, test_acc
    loaded = load_model(str(out))
    assert [int(m.levels) for m in _quantizers(loaded)] == [4, 4, 4]
    assert "warning" not in capsys.readouterr().err


def test_cli_warns_before_signed_quantizers_replace_trained_relus(relu_digits, tmp_path, capsys):
    """Signed quantizers let through what trained ReLUs drop: a warning names the fix
    (--from-scratch); from scratch there is nothing to warn about."""
    sd = tmp_path / "relu.pt"
    torch.save(relu_digits.state_dict(), sd)
    common = ["--arch", "n2c.models:DigitsCNN(levels=None)", "--dataset", "digits", "--quantizer", "signed",
              "--epochs", "1", "--samples", "64"]
    assert main(["train", str(sd), *common, "-o", str(tmp_path / "a.pt")]) == 0
    err = capsys.readouterr().err
    assert "n2c: warning: signed quantizers in place of trained ReLUs" in err and "--from-scratch" in err
    assert main(["train", str(sd), *common, "--from-scratch", "-o", str(tmp_path / "b.pt")]) == 0
    assert "warning" not in capsys.readouterr().err


BAD_TRAIN = [
    (["--model-name", "digits-cnn", "--dataset", "nosuchdata"], "unknown data set"),
    (["--model-name", "digits-cnn", "--dataset", "{tmp}/missing.npz"], "does not exist"),
    (["--model-name", "digits-cnn", "--dataset", "digits", "--levels", "0"], "--levels"),
    (["--model-name", "digits-cnn", "--dataset", "digits", "--epochs", "0"], "--epochs"),
    (["--model-name", "alexnet", "--dataset", "digits"], "unknown model name"),
    (["--dataset", "digits"], "nothing to train"),
    (["{tmp}/missing.pt", "--dataset", "digits"], "does not exist"),
    (["--arch", "n2c.models:DigitsCNN(levels=None)", "--dataset", "{tmp}/wrongclasses.npz"], "16 classes"),
    (["--arch", "n2c.models:DigitsCNN(levels=None, image_size=28)", "--dataset", "digits"], "does not accept"),
]


@pytest.mark.parametrize("args,message", BAD_TRAIN)
def test_cli_train_bad_input_exit_2_no_output(args, message, tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "wrongclasses.npz", x=rng.random((8, 1, 8, 8), dtype=np.float32),
             y=np.arange(8) % 8 + 8)
    before = set(os.listdir(tmp_path))
    argv = ["train", *[a.format(tmp=tmp_path) for a in args], "-o", str(tmp_path / "out.pt")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("n2c: error:") and message in err[0], err
    assert set(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("where", ["missing_dir", "is_a_dir"])
def test_cli_train_unwritable_output(where, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "m.pt" if where == "missing_dir" else tmp_path
    assert main(["train", "--model-name", "digits-cnn", "--dataset", "digits", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("n2c: error:") and "-o" in err[0]
    assert os.listdir(tmp_path) == []


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_save_checkpoint_failure_leaves_no_file(tmp_path):
    class NotScriptable(nn.Module):
        def forward(self, x):
            return x.numpy()  # neither scriptable nor traceable

    with pytest.raises(Exception):
        save_checkpoint(NotScriptable(), tmp_path / "m.pt", (1, 8, 8))
    assert os.listdir(tmp_path) == []



def test_fine_tuning_keeps_every_threshold_positive():
    """Adam moves each parameter by about lr: a λ far smaller than lr once crossed zero (torchvision's
    MobileNetV2 with random weights, whose deep activations are ~1e-8), and the checkpoint could not load."""
    import torchvision
    from n2c.ann.qcfs import QCFS
    from n2c.ann.train import fine_tune
    from n2c.data import Dataset
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = Dataset("random", rng.random((64, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 64), 1 / 255, 10)
    tuned = fine_tune(torchvision.models.mobilenet_v2(num_classes=10).eval(), data, levels=8, epochs=1, lr=1e-3,
                      batch_size=64, progress=False)
    lams = [float(m.lam.min()) for m in tuned.modules() if isinstance(m, QCFS)]
    assert len(lams) == 35 and min(lams) > 0


def test_cli_train_on_one_npz_file_evaluates_on_samples_it_held_out(tmp_path, capsys):
    """An .npz file has no test split: the last tenth is held out of training and named as such,
    not reported as a 'test accuracy' of samples the model was trained on."""
    from n2c.data import training_and_evaluation
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", x=rng.random((40, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 10, 40))
    train, held, what = training_and_evaluation(str(tmp_path / "mine.npz"))
    assert (len(train), len(held)) == (36, 4) and "held-out" in what
    assert not any((held.x[i] == train.x).all(axis=(1, 2, 3)).any() for i in range(len(held)))
    assert main(["train", "--model-name", "digits-cnn", "--dataset", str(tmp_path / "mine.npz"), "--levels", "4",
                 "--epochs", "1", "-o", str(tmp_path / "m.pt")]) == 0
    printed = capsys.readouterr().out
    assert "held-out (the file's last 4 samples, not trained on) accuracy" in printed and "test accuracy" not in printed
