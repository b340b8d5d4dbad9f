"""NIR both ways: run an snnTorch network in n2c, and an n2c network in Norse.

    .venv/bin/python examples/nir_interop.py

1. Build a small recurrent snnTorch network, export it with snnTorch's own exporter,
   and run the file in n2c's float reference simulator with snnTorch's discretization
   (``--dynamics snntorch`` on the command line): the spikes equal snnTorch's own.
2. Run the same file in Loihi's integers, its recurrent loop included, on the reference
   simulator and on Lava (bit for bit the same), with snnTorch's reset (``--dynamics
   snntorch``) and with Loihi's reset to 0.
3. Train nothing: take n2c's digits network (a few epochs of QCFS training), convert it
   to a one-step multi-threshold SNN, write it as portable standard NIR, load that in
   Norse and compare predictions with n2c's.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import nir
import numpy as np
import snntorch as snn
import torch
from norse.torch import from_nir
from snntorch import utils
from snntorch.export_nir import export_to_nir
from torch import nn

from backends.float.dynamics import discretization
from backends.float.simulate import simulate_float
from backends.nir.to_layers import import_nir
from n2c.cli.pipeline import run_arrays
from n2c.snn.convert import convert
from n2c.data import load_dataset
from n2c.models import DigitsCNN
from n2c.export.nir import to_nir
from backends.nir.portable import to_portable_nir
from n2c.ann.train import train


def snntorch_to_n2c(folder: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 16), snn.RLeaky(beta=0.85, linear_features=16, init_hidden=True),
                        nn.Linear(16, 4), snn.Leaky(beta=torch.full((4,), 0.8), threshold=torch.full((4,), 0.5),
                                                    init_hidden=True))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        net[2].weight.mul_(3.0)
    x = (torch.rand(40, 2, 10) < 0.3).float()  # (time, batch, features)
    utils.reset(net)
    with torch.no_grad():
        theirs = np.stack([net(x[t]).numpy() for t in range(len(x))])
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress
        graph = export_to_nir(net, torch.zeros(1, 10), ignore_dims=[0])
    nir.write(str(folder / "snntorch.nir"), graph)
    ours = simulate_float(import_nir(folder / "snntorch.nir"), x.numpy(), discretization("snntorch")).output
    print(f"snnTorch → n2c: {int((ours != theirs).sum())} of {theirs.size} output spikes differ "
          f"({int(theirs.sum())} spikes)")


def recurrent_in_integers(folder: Path) -> None:
    """The snnTorch file of part 1 in Loihi's integers: its RLeaky loop becomes a recurrent
    synapse, on the reference simulator and on Lava alike. With snnTorch's scheme the spiking
    layers keep snnTorch's reset by subtraction (kind ``lif_subtract``, a custom neuron), so
    the integer run is compared with snnTorch's own (the float run of that scheme); with NIR's
    scheme they reset to 0 as Loihi's stock neuron does."""
    graph = import_nir(folder / "snntorch.nir")
    x = (np.random.default_rng(1).random((40, 2, 10)) < 0.3).astype(np.float32)
    for name in ("snntorch", "nir"):
        disc = discretization(name, 1e-4)  # snnTorch's time step
        exact = simulate_float(graph, x, discretization("snntorch")).output  # snnTorch's own spikes
        reference = run_arrays(graph, x, "int", disc, input_scale=1.0).output
        lava = run_arrays(graph, x, "int", disc, input_scale=1.0, backend="lava").output
        print(f"recurrent graph in integers, {name} scheme: Lava "
              f"{'equals' if np.array_equal(lava, reference) else 'DIFFERS FROM'} the reference; "
              f"{100 * float((reference == exact).mean()):.1f} % of output spikes equal to snnTorch's")


def n2c_to_norse(folder: Path) -> None:
    train_set, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    model = train(DigitsCNN(levels=8), train_set, epochs=5, progress=False)
    net = convert(model, "mtn", timesteps=1)
    portable = to_portable_nir(import_nir(to_nir(net, (1, 8, 8), test_set.input_scale)))
    nir.write(str(folder / "portable.nir"), portable)
    norse_net = from_nir(nir.read(str(folder / "portable.nir")), ignore_warnings=True)
    x = test_set.x[:100]
    with torch.no_grad():
        ours = net(torch.from_numpy(x)).argmax(1).numpy()
        # Norse's Flatten(start_dim=0) would flatten a batch dimension too: one sample per call
        theirs = np.array([int(norse_net(torch.from_numpy(s), None)[0].argmax()) for s in x])
    print(f"n2c → Norse (portable NIR): {int((ours == theirs).sum())} of {len(x)} predictions equal")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        snntorch_to_n2c(Path(tmp))
        recurrent_in_integers(Path(tmp))
        n2c_to_norse(Path(tmp))
