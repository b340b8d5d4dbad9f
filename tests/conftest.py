"""Shared fixtures: one trained digits model and its NIR export per test session."""

from __future__ import annotations

import pytest
import torch

from n2c.data import load_dataset
from n2c.models import DigitsCNN
from n2c.cli.pipeline import export_model
from n2c.ann.train import train

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits_train():
    return load_dataset("digits", "train")


@pytest.fixture(scope="session")
def digits_test():
    return load_dataset("digits", "test")


@pytest.fixture(scope="session")
def qcfs_model(digits_train):
    """The demo network trained with QCFS (L = 8), as `make demo` trains it."""
    torch.manual_seed(0)
    return train(DigitsCNN(levels=8), digits_train, progress=False)


@pytest.fixture(scope="session")
def signed_cnn(digits_train):
    """DigitsCNN with SignedQCFS (L = 4) activations, the PMSM quantizer."""
    torch.manual_seed(0)
    return train(DigitsCNN(levels=4, act="signed"), digits_train, epochs=10, progress=False)


@pytest.fixture(scope="session")
def digits_nir(qcfs_model, digits_test, tmp_path_factory):
    path = tmp_path_factory.mktemp("nir") / "digits.nir"
    export_model(qcfs_model, str(path), (1, 8, 8), digits_test.input_scale, timesteps=1)
    return path


@pytest.fixture(scope="session")
def digits_checkpoint(qcfs_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "digits_qcfs.pt"
    torch.save(qcfs_model.state_dict(), path)
    return path


def _vit(digits_train, act: str, attention: str, epochs: int):
    from n2c.models import SpikingViT

    torch.manual_seed(0)
    model = SpikingViT(image_size=8, dim=16, depth=1, heads=2, patch=2, act=act, levels=4, attention=attention)
    return train(model, digits_train, epochs=epochs, lr=3e-3, progress=False)


@pytest.fixture(scope="session")
def vit_model(digits_train):
    """A tiny SpikingViT (width 16, one block, 16 tokens, SASA, QCFS L = 4) trained on digits."""
    return _vit(digits_train, "qcfs", "sasa", 30)


@pytest.fixture(scope="session")
def vit_softmax_signed(digits_train):
    """The tiny SpikingViT with signed quantizers (PMSM) and the quantized softmax, trained on digits."""
    return _vit(digits_train, "signed", "softmax", 30)
