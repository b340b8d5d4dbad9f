"""Channel selections (``chunk``, ``split``, slicing the channels, a channel shuffle), rewritten as
1×1 convolutions of 0/1 weights.

ShuffleNet splits a block's input in halves (``x.chunk(2, dim=1)``), concatenates, and shuffles
the channels (``view(B, g, C/g, H, W)``, ``transpose(1, 2)``, ``view(B, C, H, W)``). Each of
these only picks channels: output channel c' is input channel s(c'). As a layer that is
``y = S·x`` with S the 0/1 matrix of s, a 1×1 convolution without bias, which the rewrites
downstream compose into the weighted layers that read it (``n2c.ann.linear_chains``:
``W(S·x) = (W·S)·x``, exact with any padding since S adds no bias).

Which channels an operation picks is found by running it, not by reading its arguments:
every chain of reshaping and indexing operations between feature maps (with the integer
arithmetic on their sizes) is run once on probe maps whose every value is its channel's
number; an output whose values are constant over batch and space per channel is a channel
selection of those inputs. Anything else (a spatial rearrangement) is left as it was, and
named later as an operation with no spiking form. Shapes come from an example input.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from n2c.ingest.concat import add_unique_module

METHODS = {"view", "reshape", "transpose", "permute", "contiguous", "chunk", "split", "narrow", "size",
           "flatten", "unflatten", "index_select"}
FUNCTIONS = {torch.transpose, torch.chunk, torch.split, torch.reshape, torch.narrow, torch.flatten, torch.permute,
             operator.getitem, getattr, torch.index_select}


def _rearranges(node: fx.Node, value) -> bool:
    """Reshapes or indexes a tensor, or computes with sizes (whose value is no tensor)."""
    if node.op == "call_method" and node.target in METHODS:
        return True
    if node.op != "call_function":
        return False
    if node.target in FUNCTIONS:
        return True
    return not isinstance(value, torch.Tensor) and node.target in (operator.floordiv, operator.mul, operator.add,
                                                                    operator.sub, operator.truediv, int)


def _values(gm: fx.GraphModule, example: torch.Tensor) -> dict[fx.Node, object]:
    values = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            values[n] = super().run_node(n)
            return values[n]

    with torch.no_grad():
        Recorder(gm).run(example)
    return values


def _as_selection(value, probe_ids: list[tuple[fx.Node, int]]) -> list[tuple[fx.Node, int]] | None:
    """The (entry, channel) each output channel picks, when ``value`` (B, C', H, W) holds one probe
    id per channel; None otherwise."""
    if not isinstance(value, torch.Tensor) or value.dim() != 4:
        return None
    first = value[:1, :, :1, :1]
    if not (value == first).all():
        return None
    ids = first.reshape(-1).round().long().tolist()
    if any(i < 0 or i >= len(probe_ids) for i in ids):
        return None
    return [probe_ids[i] for i in ids]


def selections_to_convolutions(gm: fx.GraphModule, example: torch.Tensor) -> None:
    """Rewrite every channel selection of ``gm`` (module docstring) as 1×1 0/1 convolutions."""
    try:
        values = _values(gm, example)
    except Exception:  # the forward pass fails on the example: the export's shape check will say so
        return
    region = {n for n in gm.graph.nodes if _rearranges(n, values.get(n))}
    if not any(isinstance(values.get(n), torch.Tensor) for n in region):
        return
    entries = [n for n in gm.graph.nodes if n not in region and isinstance(values.get(n), torch.Tensor)
               and values[n].dim() == 4 and any(u in region for u in n.users)]
    probe_ids: list[tuple[fx.Node, int]] = []
    env: dict[fx.Node, object] = {}
    for entry in entries:  # every value of a probe map is its channel's id
        c = values[entry].shape[1]
        ids = torch.arange(len(probe_ids), len(probe_ids) + c, dtype=torch.float64)
        env[entry] = ids.reshape(1, c, 1, 1).expand(values[entry].shape).clone()
        probe_ids += [(entry, k) for k in range(c)]

    def arg(a):
        if isinstance(a, fx.Node):
            return env[a] if a in env else values[a]
        if isinstance(a, (list, tuple)):
            return type(a)(arg(x) for x in a)
        return a

    probed = set(entries)  # nodes computed from a probe (the others ran on the real values)
    for node in gm.graph.nodes:
        if node not in region:
            continue
        if any(a in probed for a in node.all_input_nodes):
            probed.add(node)
        args, kwargs = arg(node.args), {k: arg(v) for k, v in node.kwargs.items()}
        try:
            env[node] = getattr(args[0], node.target)(*args[1:], **kwargs) if node.op == "call_method" \
                else node.target(*args, **kwargs)
        except Exception:
            return  # a rearrangement the probe cannot follow: left for the error that names it

    def leaves_maps(user: fx.Node) -> bool:  # outside the region, or no longer a feature map (a flatten)
        value = values.get(user)
        return user not in region or isinstance(value, torch.Tensor) and value.dim() != 4 and value.dim() != 5

    for node in [n for n in gm.graph.nodes if n in region]:
        value = values.get(node)
        if node not in probed or not isinstance(value, torch.Tensor) or value.dim() != 4 or \
                not any(leaves_maps(u) for u in node.users):
            continue
        picks = _as_selection(env.get(node), probe_ids)
        if picks is None:
            continue
        _replace_by_convolutions(gm, node, picks, values)
    gm.graph.eliminate_dead_code()
    gm.recompile()


def _replace_by_convolutions(gm: fx.GraphModule, node: fx.Node, picks: list[tuple[fx.Node, int]], values) -> None:
    """``node`` = Σ over its entries of S_entry·entry, S the 0/1 selection matrices (the entry
    itself where all its channels are picked in order: ``x.contiguous()``)."""
    entry = picks[0][0]
    if picks == [(entry, k) for k in range(values[entry].shape[1])]:
        node.replace_all_uses_with(entry)
        return
    total = None
    with gm.graph.inserting_before(node):
        for entry in dict.fromkeys(e for e, _ in picks):
            conv = nn.Conv2d(values[entry].shape[1], len(picks), 1, bias=False)
            with torch.no_grad():
                conv.weight.zero_()
                for out, (e, channel) in enumerate(picks):
                    if e is entry:
                        conv.weight[out, channel] = 1.0
            out = gm.graph.call_module(add_unique_module(gm, f"{node.name}_select", conv), (entry,))
            total = out if total is None else gm.graph.call_function(operator.add, (total, out))
    node.replace_all_uses_with(total)


def needs_shapes(gm: fx.GraphModule) -> fx.Node | None:
    """A node that splits or shuffles channels (so needs an example input to be rewritten), or None."""
    return next((n for n in gm.graph.nodes if n.op == "call_method" and n.target in ("chunk", "split", "transpose",
                                                                                     "narrow", "index_select")
                 or n.op == "call_function" and n.target in (torch.chunk, torch.split, torch.transpose, torch.narrow)),
                None)

