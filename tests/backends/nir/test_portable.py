"""The portable standard-NIR form (backends.nir.portable): only standard nodes, and a one-line
refusal for what it cannot express (the runs in snnTorch and Norse: tests/contracts/test_interop.py)."""

from __future__ import annotations

import nir
import pytest

from backends.nir.portable import to_portable_nir
from backends.nir.to_layers import import_nir
from n2c.errors import N2CError
from n2c.export.nir import to_nir
from n2c.snn.convert import convert


def test_portable_graph_has_only_standard_nodes(qcfs_model, digits_test):
    graph = to_portable_nir(import_nir(to_nir(convert(qcfs_model, "mtn", 1), (1, 8, 8), digits_test.input_scale)))
    kinds = {type(node) for node in graph.nodes.values()}
    assert kinds <= {nir.Input, nir.Output, nir.Affine, nir.Conv2d, nir.LIF, nir.SumPool2d, nir.Flatten, nir.Scale}
    assert nir.LIF in kinds
    assert not any("n2c.neuron" in node.metadata for node in graph.nodes.values())
    assert graph.metadata["n2c.portable"] == 1


@pytest.mark.parametrize("method,timesteps,message", [("if", 4, "needs a one-timestep n2c network"),
                                                      ("parallel", 1, "is a parallel neuron")])
def test_what_has_no_portable_form_is_refused(method, timesteps, message, qcfs_model, digits_test, digits_train):
    snn = convert(qcfs_model, method, timesteps, calib=digits_train.head(64) if method == "parallel" else None)
    graph = import_nir(to_nir(snn, (1, 8, 8), digits_test.input_scale))
    with pytest.raises(N2CError, match=message):
        to_portable_nir(graph)
