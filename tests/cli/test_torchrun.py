"""torchrun: `torchrun --nproc_per_node 2 -m n2c train ...` trains with DistributedDataParallel
(gloo, loopback) and gives what one process gives for the same global batch; evaluation and
calibration are sharded and reduced; rank 0 alone writes and speaks."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from n2c.ann.train import evaluate, relu_to_quantizer
from n2c import distributed
from n2c.distributed import World, resolve_device
from n2c.errors import N2CError
from n2c.models import DigitsCNN

TRAIN = ["train", "--dataset", "digits", "--samples", "256", "--epochs", "2", "--batch-size", "32"]


def _env():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _n2c(args, processes: int, cwd):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    return subprocess.run([*launcher, "-m", "n2c", *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=300)


def _weights(path):
    return {k: v.double() for k, v in torch.jit.load(str(path)).state_dict().items()}


@pytest.fixture(scope="module")
def relu_checkpoint(tmp_path_factory):
    """A trained-looking ReLU digits CNN (random weights) as a TorchScript file: fine-tuning it
    calibrates λ from data, which under torchrun is gathered from the processes' shards."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("relu") / "relu.pt"
    torch.jit.save(torch.jit.script(DigitsCNN(levels=None).eval()), str(path))
    return path


@pytest.mark.parametrize("source", ["scratch", "fine-tune"])
def test_two_processes_train_what_one_process_trains(tmp_path, relu_checkpoint, source):
    model = ["--model-name", "digits-cnn"] if source == "scratch" else [str(relu_checkpoint)]
    one = _n2c([*TRAIN, *model, "-o", "one.pt"], 1, tmp_path)
    two = _n2c([*TRAIN, *model, "-o", "two.pt"], 2, tmp_path)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    a, b = _weights(tmp_path / "one.pt"), _weights(tmp_path / "two.pt")
    assert a.keys() == b.keys()
    for name in a:  # the same samples per step; only the order of float sums differs
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-5), name
    lams = [k for k in a if k.endswith("lam")]
    assert lams and all(torch.equal(a[k], b[k]) or torch.allclose(a[k], b[k], rtol=1e-5) for k in lams)
    assert two.stdout.count("wrote two.pt") == 1  # rank 0 alone reports and writes
    assert "2 processes" in two.stderr
    accuracy = [line for line in two.stdout.splitlines() if line.startswith("train accuracy")]
    assert accuracy == [line for line in one.stdout.splitlines() if line.startswith("train accuracy")]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".") or p.endswith(".tmp")]  # atomic, no leftovers


def test_a_global_batch_that_does_not_split_is_refused_before_training(tmp_path):
    run = _n2c(["train", "--model-name", "digits-cnn", "--dataset", "digits", "--batch-size", "33", "-o", "x.pt"], 2,
               tmp_path)
    assert run.returncode != 0 and not (tmp_path / "x.pt").exists()
    errors = [line for line in run.stderr.splitlines() if line.startswith("n2c: error:")]
    assert errors == ["n2c: error: --batch-size 33 is the global batch and must split evenly over the 2 processes; "
                      "use a multiple of 2"]  # once, from rank 0


def test_shards_cover_every_item_once():
    for n in (0, 1, 7, 10, 64):
        for size in (1, 2, 3, 5):
            parts = [World(rank, size).shard(n) for rank in range(size)]
            assert [i for s in parts for i in range(n)[s]] == list(range(n))


def test_a_world_of_one_evaluates_and_calibrates_as_before(digits_train, qcfs_model):
    world = distributed.setup()  # no torchrun: a world of one on the CPU
    assert world == World() and world.main and not world.distributed
    assert evaluate(qcfs_model, digits_train, world) == evaluate(qcfs_model, digits_train)
    torch.manual_seed(0)
    relu = DigitsCNN(levels=None)
    a = relu_to_quantizer(relu, 8, calib=digits_train.head(100), world=world)
    b = relu_to_quantizer(relu, 8, calib=digits_train.head(100))
    assert [float(m.lam) for m in a.modules() if hasattr(m, "lam")] == \
        [float(m.lam) for m in b.modules() if hasattr(m, "lam")]


def test_devices_are_checked_in_one_line():
    assert resolve_device(None) == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(N2CError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(N2CError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_world_sum_and_gather_are_identities_alone():
    w = World()
    assert w.sum(3.0) == 3.0 and np.array_equal(w.gather(np.arange(3)), np.arange(3))


def test_simulate_shards_the_samples_and_reduces_the_counts(tmp_path, digits_nir):
    import json
    runs = [_n2c(["simulate", str(digits_nir), "--samples", "101", "--json"], n, tmp_path) for n in (1, 2)]
    assert all(r.returncode == 0 for r in runs), runs[1].stderr
    one, two = (json.loads(r.stdout) for r in runs)  # one JSON object: rank 0 alone prints
    for key in one:
        if key != "samples_per_second":
            assert one[key] == two[key], key
    assert one["samples"] == 101 and sum(one["spikes_per_layer"].values()) > 0
