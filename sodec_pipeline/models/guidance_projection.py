"""Guidance projection F_p of SODEC: ViT tokens → cross-attention guidance c_g."""

import torch
from torch import nn

from .layers import GradientCheckpointingMixin


class GuidanceProjection(GradientCheckpointingMixin, nn.Module):
    r"""F_p: ViT tokens (B, L, vit_hidden_size) → ``c_g`` (B, num_tokens, cross_attention_dim).

    The tokens are projected to the UNet's cross-attention width, then ``num_tokens`` learned
    queries attend to them through ``num_layers`` pre-norm transformer blocks (a small resampler).
    The number of ViT tokens L does not have to be fixed.
    """

    def __init__(
        self,
        vit_hidden_size: int = 1280,
        cross_attention_dim: int = 1024,
        num_tokens: int = 77,
        num_attention_heads: int = 8,
        num_layers: int = 1,
        ff_mult: int = 4,
    ):
        super().__init__()
        if cross_attention_dim % num_attention_heads:
            raise ValueError(
                f"cross_attention_dim {cross_attention_dim} is not divisible by num_attention_heads {num_attention_heads}"
            )
        self.proj_in = nn.Linear(vit_hidden_size, cross_attention_dim)
        self.queries = nn.Parameter(torch.randn(1, num_tokens, cross_attention_dim) * cross_attention_dim**-0.5)
        self.layers = nn.ModuleList(
            [
                nn.ModuleDict(
                    {
                        "norm_queries": nn.LayerNorm(cross_attention_dim),
                        "norm_tokens": nn.LayerNorm(cross_attention_dim),
                        "attention": nn.MultiheadAttention(cross_attention_dim, num_attention_heads, batch_first=True),
                        "norm_ff": nn.LayerNorm(cross_attention_dim),
                        "ff": nn.Sequential(
                            nn.Linear(cross_attention_dim, ff_mult * cross_attention_dim),
                            nn.GELU(),
                            nn.Linear(ff_mult * cross_attention_dim, cross_attention_dim),
                        ),
                    }
                )
                for _ in range(num_layers)
            ]
        )
        self.norm_out = nn.LayerNorm(cross_attention_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = self.proj_in(tokens)
        h = self.queries.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        for layer in self.layers:
            h = self.checkpointed(lambda queries, keys, layer=layer: _resampler_layer(layer, queries, keys), h, tokens)
        return self.norm_out(h)


def _resampler_layer(layer: nn.ModuleDict, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """One pre-norm block: the queries attend to the tokens, then a feed-forward layer."""
    kv = layer["norm_tokens"](tokens)
    h = h + layer["attention"](layer["norm_queries"](h), kv, kv, need_weights=False)[0]
    return h + layer["ff"](layer["norm_ff"](h))
