"""Vision transformers of torchvision and timm, brought into n2c's spiking form (issue #17).

A ViT as torchvision (``torchvision.models.VisionTransformer``, with ``nn.MultiheadAttention``) and
timm (``timm.models.vision_transformer.VisionTransformer``, with ``F.scaled_dot_product_attention``)
build it has four things no spiking network carries: LayerNorm, GELU, a softmax over real scores,
and a class token plus a table of position embeddings added to real values. Conversion papers
replace them and fine-tune; :func:`to_spiking_vit` does the replacement, keeping every weight
that has a place in :class:`n2c.models.SpikingViT`:

    patch embedding      the same convolution (RGB weights summed over the channels for grayscale
                         data: exact for an image replicated to three channels)
    LayerNorm (γ, β)     folded into the projection after it, W·diag(γ) and W·β + b (the
                         normalization itself gives way to the BatchNorm after each projection)
    Q, K, V, output      the same weights as 1x1 convolutions (LayerScale folded into the output
                         and fc2 weights); the attention becomes SASA (scores quantized, no softmax:
                         it fine-tunes best) or, with ``attention="softmax"``, the quantized softmax
    MLP                  the same weights; GELU becomes the quantizer
    class token, table   replaced by the mean token and a depthwise positional convolution that
                         starts at zero (the model learns positions again while fine-tuning)
    final LayerNorm      folded into the head

The result is a starting point, not an equal network: ``n2c train MODEL`` fine-tunes it into its
quantized form (then it converts to an SNN exactly at T = 1). A configuration that has no place
in SpikingViT (qk-norm, register tokens without a class token, a norm in the patch embedding,
an MLP width that is not a multiple of the embedding) is an error that names it.
"""

from __future__ import annotations

import torch
from torch import nn

from n2c.ann.attention import SelfAttention
from n2c.errors import UnsupportedLayerError
from n2c.models import SpikingViT


def recognize(model: nn.Module) -> str | None:
    """"torchvision" or "timm" for their VisionTransformer classes (and subclasses), else None."""
    for cls in type(model).__mro__:
        if cls.__name__ == "VisionTransformer":
            if cls.__module__.startswith("torchvision."):
                return "torchvision"
            if cls.__module__.startswith("timm."):
                return "timm"
    return None


def _ln(norm: nn.Module, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(norm, nn.LayerNorm):
        raise UnsupportedLayerError(f"{where} is {type(norm).__name__}, not LayerNorm; n2c folds only LayerNorm")
    dim = norm.normalized_shape[-1]
    weight = norm.weight.detach() if norm.weight is not None else torch.ones(dim)
    bias = norm.bias.detach() if norm.bias is not None else torch.zeros(dim)
    return weight, bias


def _block(ln1, qkv_w, qkv_b, proj, ln2, fc1, fc2, ls1=None, ls2=None) -> dict:
    return {"ln1": ln1, "qkv_w": qkv_w.detach(), "qkv_b": None if qkv_b is None else qkv_b.detach(),
            "proj_w": proj.weight.detach(), "proj_b": None if proj.bias is None else proj.bias.detach(),
            "ln2": ln2, "fc1": fc1, "fc2": fc2, "ls1": ls1, "ls2": ls2}


def _torchvision(m) -> dict:
    blocks = []
    for i, layer in enumerate(m.encoder.layers):
        where = f"encoder.layers.{i}"
        att = layer.self_attention
        if not att._qkv_same_embed_dim or att.bias_k is not None or att.add_zero_attn:
            raise UnsupportedLayerError(f"{where}.self_attention: separate q/k/v dimensions, bias_k or add_zero_attn "
                                        "have no place in n2c's attention")
        fc1, fc2 = layer.mlp[0], layer.mlp[3]
        blocks.append(_block(_ln(layer.ln_1, f"{where}.ln_1"), att.in_proj_weight, att.in_proj_bias, att.out_proj,
                             _ln(layer.ln_2, f"{where}.ln_2"), fc1, fc2))
    conv = m.conv_proj
    if not isinstance(conv, nn.Conv2d):
        raise UnsupportedLayerError("conv_proj is a stem of convolutions (conv_stem_configs); n2c takes the plain "
                                    "patch convolution")
    return {"patch": conv, "heads": m.encoder.layers[0].self_attention.num_heads, "image_size": m.image_size,
            "blocks": blocks, "final": _ln(m.encoder.ln, "encoder.ln"), "head": m.heads[-1],
            "mlp_hidden": blocks[0]["fc1"].out_features if blocks else 0}


def _timm(m) -> dict:
    if getattr(m, "cls_token", None) is None and getattr(m, "num_prefix_tokens", 0):
        raise UnsupportedLayerError("register tokens without a class token have no place in n2c's SpikingViT")
    if not isinstance(getattr(m.patch_embed, "norm", nn.Identity()), nn.Identity):
        raise UnsupportedLayerError("patch_embed.norm: a norm after the patch embedding is not supported; use norm=None")
    blocks = []
    for i, blk in enumerate(m.blocks):
        where = f"blocks.{i}"
        att = blk.attn
        if not isinstance(att.q_norm, nn.Identity) or not isinstance(att.k_norm, nn.Identity):
            raise UnsupportedLayerError(f"{where}.attn: qk-norm (q_norm, k_norm) has no place in n2c's attention; "
                                        "use qk_norm=False")
        if not isinstance(getattr(att, "norm", nn.Identity()), nn.Identity):
            raise UnsupportedLayerError(f"{where}.attn.norm (scale_norm) is not supported")
        ls = [getattr(blk, n, nn.Identity()) for n in ("ls1", "ls2")]
        gains = [l.gamma.detach() if hasattr(l, "gamma") else None for l in ls]
        blocks.append(_block(_ln(blk.norm1, f"{where}.norm1"), att.qkv.weight, att.qkv.bias, att.proj,
                             _ln(blk.norm2, f"{where}.norm2"), blk.mlp.fc1, blk.mlp.fc2, *gains))
    final = m.norm if not isinstance(m.norm, nn.Identity) else m.fc_norm
    size = m.patch_embed.img_size
    return {"patch": m.patch_embed.proj, "heads": m.blocks[0].attn.num_heads if len(m.blocks) else 1,
            "image_size": size if isinstance(size, int) else tuple(size), "blocks": blocks,
            "final": None if isinstance(final, nn.Identity) else _ln(final, "norm"), "head": m.head,
            "mlp_hidden": blocks[0]["fc1"].out_features if blocks else 0}


def _set_conv(seq: nn.Sequential, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """A (1x1 conv, BatchNorm) pair to compute W·x + b at its start: BN's shift holds b."""
    conv, bn = seq
    conv.weight.data.copy_(weight.reshape(conv.weight.shape))
    bn.bias.data.copy_(bias if bias is not None else torch.zeros_like(bn.bias))


def _folded(weight: torch.Tensor, bias: torch.Tensor | None, ln: tuple | None, gain: torch.Tensor | None = None):
    """W·(γ·x̂ + β) + b = (W·diag(γ))·x̂ + (W·β + b), then rows times a LayerScale gain."""
    bias = torch.zeros(weight.shape[0]) if bias is None else bias.detach()
    weight = weight.detach()
    if ln is not None:
        gamma, beta = ln
        bias = weight @ beta + bias
        weight = weight * gamma[None, :]
    if gain is not None:
        weight, bias = weight * gain[:, None], bias * gain
    return weight, bias


def to_spiking_vit(model: nn.Module, in_channels: int, act: str = "qcfs", levels: int = 8,
                   attention: str = "sasa", lam: float = 2.0) -> SpikingViT:
    """The :class:`SpikingViT` that starts from ``model``'s weights (module docstring), for data of
    ``in_channels`` channels."""
    kind = recognize(model)
    if kind is None:
        raise UnsupportedLayerError(f"{type(model).__name__} is not a torchvision or timm VisionTransformer")
    parts = _torchvision(model) if kind == "torchvision" else _timm(model)
    conv: nn.Conv2d = parts["patch"]
    if conv.kernel_size != conv.stride or conv.padding not in (0, (0, 0)) or conv.kernel_size[0] != conv.kernel_size[1]:
        raise UnsupportedLayerError("the patch embedding must be a square convolution with stride = kernel and "
                                    "no padding")
    dim, blocks, head = conv.out_channels, parts["blocks"], parts["head"]
    if not blocks:
        raise UnsupportedLayerError("the transformer has no blocks")
    if parts["mlp_hidden"] % dim:
        raise UnsupportedLayerError(f"MLP width {parts['mlp_hidden']} is not a multiple of the embedding {dim}")
    if not isinstance(head, nn.Linear):
        raise UnsupportedLayerError(f"the head is {type(head).__name__}, not one Linear layer (num_classes > 0)")
    weight = conv.weight.detach()
    if in_channels != weight.shape[1]:
        if in_channels != 1 or weight.shape[1] != 3:
            raise UnsupportedLayerError(f"the patch embedding takes {weight.shape[1]} channels, the data has "
                                        f"{in_channels}; train on data of {weight.shape[1]} channels")
        weight = weight.sum(dim=1, keepdim=True)  # a gray image seen as RGB (x, x, x): Σ_c W_c·x exactly
    vit = SpikingViT(in_channels, parts["image_size"], head.out_features, dim=dim, depth=len(blocks),
                     heads=parts["heads"], patch=conv.kernel_size[0], mlp_ratio=parts["mlp_hidden"] // dim, act=act,
                     levels=levels, lam=lam, attention=attention)
    with torch.no_grad():
        vit.patch[0].weight.copy_(weight)
        vit.patch[1].bias.copy_(conv.bias.detach() if conv.bias is not None else torch.zeros(dim))
        vit.pos[0].weight.zero_()
        for blk, src in zip(vit.blocks, blocks):
            attn: SelfAttention = blk.attn
            w, b = _folded(src["qkv_w"], src["qkv_b"], src["ln1"])
            for i, seq in enumerate((attn.q, attn.k, attn.v)):
                _set_conv(seq, w[i * dim:(i + 1) * dim], b[i * dim:(i + 1) * dim])
            _set_conv(attn.proj, *_folded(src["proj_w"], src["proj_b"], None, src["ls1"]))
            _set_conv(blk.fc1, *_folded(src["fc1"].weight, src["fc1"].bias, src["ln2"]))
            _set_conv(blk.fc2, *_folded(src["fc2"].weight, src["fc2"].bias, None, src["ls2"]))
        w, b = _folded(head.weight, head.bias, parts["final"])
        vit.head[-1].weight.copy_(w)
        vit.head[-1].bias.copy_(b)
    return vit
