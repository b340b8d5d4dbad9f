"""Load a trained model from a file, whatever way it was saved.

:func:`load_model` accepts four formats, one module each (``torchscript``, ``torch_export``,
``state_dict`` for the last two; ``files`` tells them apart, ``modules`` rebuilds layers), recognised by their content:

1. **TorchScript** (``torch.jit.save`` of a scripted or traced model). The
   ScriptModule's graph is interpreted and rebuilt as a ``torch.fx``
   GraphModule of real ``nn`` modules carrying the saved tensors.
2. **torch.export** (``torch.export.save``, ``.pt2``). The ATen graph of the
   ExportedProgram is mapped back onto modules; QCFS and SignedQCFS activations,
   which export decomposes into arithmetic (they differ only in the clamp's lower
   bound), are recovered from ``nn_module_stack``.
3. **state_dict** (``torch.save(model.state_dict())``) together with
   ``arch="package.module:ClassName"``. Loaded with ``weights_only=True``.
4. **pickled nn.Module** (``torch.save(model)``), only with ``trust_pickle``
   because unpickling runs arbitrary code.

Formats 1 and 2 come back already in the canonical form of :mod:`n2c.ingest.canonical`;
formats 3 and 4 are the user's own module and are canonicalised by tracing.
QCFS thresholds λ keep their saved shape, a scalar or per channel (for a
state_dict, even if the ``arch`` class builds λ with another shape).

A converted SNN saved by :func:`n2c.snn.io.save_snn` is refused with a
ModelLoadError pointing to ``n2c export`` / :func:`n2c.snn.io.load_snn`: it is not
a model to convert (that module's docstring gives the reasons).

Every failure is a one-line :class:`ModelLoadError` or
:class:`UnsupportedLayerError` naming the problem and the fix.
"""

from __future__ import annotations

import os

from torch import nn

from n2c.ingest.files import check_file, refuse_snn, sniff
from n2c.ingest.state_dict import instantiate_arch, load_pickle
from n2c.ingest.torch_export import load_exported
from n2c.ingest.torchscript import load_torchscript


def load_model(path: str, arch: str | None = None, trust_pickle: bool = False) -> nn.Module:
    """Load the model saved at ``path`` and return it in eval mode.

    ``arch`` (``"package.module:ClassName"`` or ``"package.module:ClassName(k=v, ...)"``)
    names the class to instantiate for a state_dict; it is ignored for files
    that carry their own architecture. ``trust_pickle`` allows unpickling a
    whole ``nn.Module``, which executes code from the file.
    """
    path = os.fspath(path)
    check_file(path)
    kind = sniff(path)
    if kind == "torchscript":
        refuse_snn(path)
        model = load_torchscript(path)
    elif kind == "export":
        model = load_exported(path, trust_pickle)
    else:
        model = load_pickle(path, arch, trust_pickle)
    return model.eval()


__all__ = ["instantiate_arch", "load_model"]
