"""A Vision Transformer in DeiT's shape (Touvron et al., "Training data-efficient image transformers &
distillation through attention", ICML 2021; Dosovitskiy et al., "An Image is Worth 16x16 Words",
ICLR 2021), full precision or binary."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._layers import LayerFactory, ZooModel, check_input_shape
from ._registry import ModelSpec, Option, is_int, is_positive_number, register

__all__ = ["Attention", "MLPBlock", "TransformerBlock", "ViT"]


class Attention(nn.Module):
    """Multi-head self-attention with its projections as ``qkv`` and ``proj`` Linear layers (not
    ``nn.MultiheadAttention``, whose raw parameters no binary layer could replace). The two matrix
    products of attention itself stay real-valued: they have no weights, so no binary layer stands in
    for them (binarizing them is a technique of its own, e.g. BiBERT's)."""

    def __init__(self, dim: int, heads: int, layers: LayerFactory) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = layers.linear(dim, 3 * dim)
        self.proj = layers.linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class MLPBlock(nn.Module):
    """The transformer's feed-forward network: ``fc1 -> GELU -> fc2``."""

    def __init__(self, dim: int, hidden: int, layers: LayerFactory) -> None:
        super().__init__()
        self.fc1 = layers.linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = layers.linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """A pre-norm block: ``x + attn(LN(x))``, then ``x + mlp(LN(x))``."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, layers: LayerFactory) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, layers)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, mlp_hidden, layers)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(ZooModel):
    """ViT with a class token and learned position embeddings; defaults are DeiT-Tiny (patch 16, dim 192,
    depth 12, 3 heads, MLP ratio 4: 5,717,416 parameters with 1000 classes).

    The patch embedding (a stride-``patch_size`` conv) and the head are full precision; with a method,
    every ``qkv``, ``proj``, ``fc1`` and ``fc2`` is a binary Linear.
    """

    def __init__(
        self, *, layers: LayerFactory, num_classes: int, in_channels: int, img_size: int, patch_size: int,
        dim: int, depth: int, heads: int, mlp_ratio: float,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"vit: img_size={img_size} must be a multiple of patch_size={patch_size}")
        if dim % heads:
            raise ValueError(f"vit: dim={dim} must be a multiple of heads={heads}")
        mlp_hidden = int(dim * mlp_ratio)
        if mlp_hidden < 1:
            raise ValueError(f"vit: mlp_ratio={mlp_ratio} gives an MLP of {mlp_hidden} units; use dim*mlp_ratio >= 1")
        self.patch_size = patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        tokens = (img_size // patch_size) ** 2 + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.Sequential(*[TransformerBlock(dim, heads, mlp_hidden, layers) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        self._record((in_channels, img_size, img_size), num_classes, layers)
        self._init_weights()

    def _init_weights(self) -> None:
        # DeiT's initialisation: truncated normal (std 0.02) for tokens and Linear weights, zero biases.
        # Only the model's own Linears: a method may keep helper Linears inside a binary layer (FDA's
        # noise adaptation) whose initialisation is the method's business.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        own = [self.head] + [
            lin for blk in self.blocks for lin in (blk.attn.qkv, blk.attn.proj, blk.mlp.fc1, blk.mlp.fc2)
        ]
        for lin in own:
            nn.init.trunc_normal_(lin.weight, std=0.02)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor) -> Tensor:
        check_input_shape("ViT", x, self.input_shape, 2,
                          f"its position embedding has one entry per patch: build it with img_size={x.shape[-1]}")
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


register(ModelSpec(
    name="vit", builder=ViT,
    options={
        "img_size": Option(224, is_int(1), "a positive int, a multiple of patch_size", "side of the square input"),
        "patch_size": Option(16, is_int(1), "a positive int", "side of the square patches"),
        "dim": Option(192, is_int(1), "a positive int, a multiple of heads", "token width"),
        "depth": Option(12, is_int(1), "a positive int", "number of transformer blocks"),
        "heads": Option(3, is_int(1), "a positive int dividing dim", "attention heads"),
        "mlp_ratio": Option(4.0, is_positive_number, "a number > 0", "MLP hidden width / dim"),
    },
    input_shape=(3, 224, 224), num_classes=1000, size_option="img_size",
    paper="Touvron et al., DeiT, ICML 2021 (DeiT-Tiny shape); Dosovitskiy et al., ViT, ICLR 2021",
    summary="ViT, DeiT-Tiny by default; qkv/proj/fc1/fc2 binary, patch embedding and head full precision",
))
