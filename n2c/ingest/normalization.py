"""Input normalization ``(x − m) / s`` as one layer the integer stage folds away.

Models trained on normalized images compute ``y = W·((x − m)/s) + b`` in their first layer,
with the normalization in ``forward`` (``(x - mean) / std``, a BatchNorm on the input), in the
data pipeline (torchvision's ``Normalize``: ``--input-mean/--input-std``) or both. n2c writes
it as a depthwise 1×1 convolution (weight 1/s, bias −m/s per channel) in front of the model:
the float networks compute exactly what the model did, and the NIR graph says it plainly.
The integer stage (``backends.quantize``) folds that layer into the input: one raw input
unit is worth 1/s more, and the shift −m/s becomes a bias per output position of the layers
that read it (exact at the borders, where zero padding of the normalized input holds only
the taps inside the image). The chip's input stays the raw unsigned 8-bit image.
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from n2c.errors import UnsupportedLayerError

SUB = (operator.sub, operator.isub, torch.sub, "sub", "sub_")
ADD = (operator.add, operator.iadd, torch.add, "add", "add_")
MUL = (operator.mul, operator.imul, torch.mul, "mul", "mul_")
DIV = (operator.truediv, operator.itruediv, torch.div, "div", "div_")


def normalization_layer(mean, std) -> nn.Conv2d:
    """(x − mean)/std per channel as a depthwise 1×1 convolution (weight 1/std, bias −mean/std)."""
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
    std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        raise UnsupportedLayerError(f"--input-mean has {len(mean)} values and --input-std {len(std)}; give one per "
                                    "input channel (or one for all)")
    if not torch.isfinite(mean).all() or not torch.isfinite(std).all() or (std == 0).any():
        raise UnsupportedLayerError("--input-std must be finite and non-zero, --input-mean finite")
    mean, std = torch.broadcast_tensors(mean, std)
    return channelwise_conv(1 / std, -mean / std)


def channelwise_conv(scale: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d:
    """The per-channel affine s·x + t as a depthwise 1×1 convolution (also a BatchNorm that
    follows no weighted layer, ``n2c.snn.convert.fold_batchnorm``)."""
    conv = nn.Conv2d(len(scale), len(scale), 1, groups=len(scale))
    with torch.no_grad():
        conv.weight.copy_(scale.reshape(-1, 1, 1, 1))
        conv.bias.copy_(shift.reshape(-1))
    return conv


class Normalized(nn.Module):
    """``model`` fed inputs normalized per channel: ``model((x − mean)/std)``."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.normalize, self.model = normalization_layer(mean, std), model

    def forward(self, x):
        return self.model(self.normalize(x))


def _constant(gm: fx.GraphModule, arg) -> torch.Tensor | None:
    """``arg`` as a tensor when it depends on no input: a number, a module attribute, or an
    operation on those (``torch.tensor([...]).view(1, 3, 1, 1)``); else None."""
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return torch.tensor(float(arg))
    if not isinstance(arg, fx.Node):
        return None
    if arg.op == "get_attr":
        value = gm
        for part in arg.target.split("."):
            value = getattr(value, part)
        return value.detach().float() if isinstance(value, torch.Tensor) else None
    if arg.op in ("call_function", "call_method"):
        args = [_constant(gm, a) if isinstance(a, fx.Node) else a for a in arg.args]
        if any(isinstance(a, fx.Node) for a in arg.args) and any(v is None for v, a in zip(args, arg.args)
                                                                 if isinstance(a, fx.Node)):
            return None
        try:
            with torch.no_grad():
                value = arg.target(*args, **arg.kwargs) if arg.op == "call_function" else \
                    getattr(args[0], arg.target)(*args[1:], **arg.kwargs)
        except Exception:
            return None
        return value.float() if isinstance(value, torch.Tensor) else None
    return None


def _per_channel(value: torch.Tensor) -> torch.Tensor | None:
    """A constant that broadcasts per channel against (B, C, H, W): one number, or (C, 1, 1) /
    (1, C, 1, 1). A (C,) vector would broadcast along the width, not the channels."""
    if value.numel() == 1:
        return value.reshape(1)
    if value.dim() in (3, 4) and value.shape[-2:] == (1, 1) and (value.dim() == 3 or value.shape[0] == 1):
        return value.reshape(-1)
    return None


def _step(gm: fx.GraphModule, node: fx.Node, x: fx.Node):
    """For ``node`` = an affine operation of ``x`` and a per-channel constant c, the map
    (a, b) ↦ new (a, b) with node = a·x₀ + b; else None."""
    op = node.target if node.op == "call_function" else node.target if node.op == "call_method" else None
    if op is None or len(node.args) != 2 or node.kwargs:
        return None
    a_first = node.args[0] is x
    other = node.args[1] if a_first else node.args[0]
    if other is x:
        return None
    c = _constant(gm, other)
    c = None if c is None else _per_channel(c)
    if c is None:
        return None
    if op in SUB:
        return (lambda a, b: (a, b - c)) if a_first else (lambda a, b: (-a, c - b))
    if op in ADD:
        return lambda a, b: (a, b + c)
    if op in MUL:
        return lambda a, b: (a * c, b * c)
    if op in DIV and a_first:
        return lambda a, b: (a / c, b / c)
    return None


def fold_input_affine(gm: fx.GraphModule, input_shape: tuple[int, ...] | None) -> None:
    """Replace the chain of affine operations with constants that the model applies to its input
    first (``(x - mean) / std``) by one layer: a depthwise 1×1 convolution for images, a
    diagonal Linear for flat inputs. ``input_shape`` (with the batch), when known, tells the
    input's channels where the constants are single numbers; else the layer that reads it."""
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        return
    x = last = inputs[0]
    a, b = torch.ones(1), torch.zeros(1)
    affine, reshaped = [], False
    while len(last.users) == 1:
        node = next(iter(last.users))
        step = _step(gm, node, last)
        if step is None and _is_reshape(node):  # x.view(-1, 784) first: numbers commute with it
            reshaped, last = True, node
            continue
        if step is None:
            break
        a, b = step(a, b)
        affine.append((node, last))  # the operation and its operand on the input's side
        last = node
    if reshaped and max(len(a), len(b)) > 1:
        return  # per-channel constants after a reshape: not an input normalization n2c recognizes
    if not affine:
        return
    reader = next(iter(last.users)) if len(last.users) == 1 and next(iter(last.users)).op == "call_module" else None
    reader = gm.get_submodule(reader.target) if reader is not None else None
    if reshaped and input_shape is None:
        raise UnsupportedLayerError("the model reshapes and then normalizes its input; n2c needs the input's shape "
                                    "for that: pass calibration data")
    flat = len(input_shape) == 2 if input_shape is not None else isinstance(reader, nn.Linear)
    width = max(len(a), len(b))
    if width == 1:
        width = input_shape[1] if input_shape is not None else \
            reader.in_features if isinstance(reader, nn.Linear) else \
            reader.in_channels if isinstance(reader, nn.Conv2d) else None
        if width is None:
            raise UnsupportedLayerError("the model normalizes its input with single numbers but n2c cannot tell how "
                                        "many channels the input has; pass calibration data")
    scale, shift = a.expand(width).clone(), b.expand(width).clone()
    if flat:
        layer = nn.Linear(width, width)
        with torch.no_grad():
            layer.weight.copy_(torch.diag(scale))
            layer.bias.copy_(shift)
    else:
        layer = channelwise_conv(scale, shift)
    gm.add_submodule("input_normalization", layer)
    for node, operand in reversed(affine):  # bypassed, last first: the layer normalizes the input itself
        node.replace_all_uses_with(operand)
    with gm.graph.inserting_after(x):
        normalized = gm.graph.call_module("input_normalization", (x,))
    x.replace_all_uses_with(normalized)
    normalized.args = (x,)
    gm.graph.eliminate_dead_code()


def _is_reshape(node: fx.Node) -> bool:
    return node.op == "call_method" and node.target in ("view", "reshape", "flatten") or \
        node.op == "call_function" and node.target in (torch.flatten, torch.reshape)
