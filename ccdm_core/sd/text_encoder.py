"""CLIP's text transformer (Radford et al. 2021) with Hugging Face CLIPTextModel's parameter names, as SD1.x uses it."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ccdm_core.errors import CCDMError

ACTIVATIONS = ("quick_gelu", "gelu")
LAYER_NORM_EPS = 1e-5
TOKEN_EMBEDDING_KEY = "text_model.embeddings.token_embedding.weight"
POSITION_EMBEDDING_KEY = "text_model.embeddings.position_embedding.weight"
_LAYER_KEY = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.")


@dataclass(frozen=True)
class CLIPTextConfig:
    """Shape of a CLIP text transformer; the defaults are SD1.x's (openai/clip-vit-large-patch14)."""

    vocab_size: int = 49408
    width: int = 768
    layers: int = 12
    heads: int = 12
    max_positions: int = 77
    mlp_ratio: int = 4
    activation: str = "quick_gelu"

    def __post_init__(self):
        for name in ("vocab_size", "width", "layers", "heads", "max_positions", "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CCDMError(f"CLIPTextConfig.{name} must be an integer >= 1, got {value!r}")
        if self.width % self.heads:
            raise CCDMError(f"CLIPTextConfig.width ({self.width}) must be divisible by heads ({self.heads})")
        if self.activation not in ACTIVATIONS:
            raise CCDMError(f"CLIPTextConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")


def infer_text_config(state_dict: Dict[str, torch.Tensor], heads: int = 0,
                      activation: str = "quick_gelu") -> CLIPTextConfig:
    """Read the config off CLIPTextModel weights: width/vocab from the token table, layers from the keys.

    Heads cannot be seen in the weights; unless given, CLIP's rule of 64 channels per head is used (at least 1).
    """
    for key in (TOKEN_EMBEDDING_KEY, POSITION_EMBEDDING_KEY, "text_model.encoder.layers.0.mlp.fc1.weight"):
        if key not in state_dict:
            raise CCDMError(f"text encoder weights lack {key}; expected Hugging Face CLIPTextModel keys")
    vocab_size, width = state_dict[TOKEN_EMBEDDING_KEY].shape
    hidden = state_dict["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]
    if hidden % width:
        raise CCDMError(f"text encoder MLP width {hidden} is not a multiple of its width {width}")
    layers = {int(m.group(1)) for m in map(_LAYER_KEY.match, state_dict) if m}
    return CLIPTextConfig(
        vocab_size=int(vocab_size), width=int(width), layers=len(layers), heads=heads or max(1, width // 64),
        max_positions=int(state_dict[POSITION_EMBEDDING_KEY].shape[0]), mlp_ratio=hidden // width,
        activation=activation,
    )


class CLIPAttention(nn.Module):
    """Multi-head self-attention with a causal mask (each token sees itself and earlier tokens)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (rearrange(p(x), "b n (h d) -> b h n d", h=self.heads) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(rearrange(out, "b h n d -> b n (h d)"))


class CLIPMLP(nn.Module):
    """Two-layer MLP; CLIP uses QuickGELU, x * sigmoid(1.702 x)."""

    def __init__(self, width: int, hidden: int, activation: str):
        super().__init__()
        self.activation = activation
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = h * torch.sigmoid(1.702 * h) if self.activation == "quick_gelu" else F.gelu(h)
        return self.fc2(h)


class CLIPEncoderLayer(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.self_attn = CLIPAttention(config.width, config.heads)
        self.layer_norm1 = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)
        self.mlp = CLIPMLP(config.width, config.width * config.mlp_ratio, config.activation)
        self.layer_norm2 = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nn.Module):
    """Token embedding plus learned absolute position embedding."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.position_embedding = nn.Embedding(config.max_positions, config.width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.token_embedding(tokens) + self.position_embedding(positions)[None]


class CLIPEncoder(nn.Module):
    """The stack of transformer layers."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(config) for _ in range(config.layers)])


class CLIPTextTransformer(nn.Module):
    """Embeddings, encoder layers, final LayerNorm (the `text_model` of CLIPTextModel)."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.embeddings = CLIPEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.width, eps=LAYER_NORM_EPS)


class CLIPTextEncoder(nn.Module):
    """SD1.x's text encoder: `forward(tokens)` -> (n, length, width) last hidden state after the final LayerNorm."""

    def __init__(self, config: CLIPTextConfig = CLIPTextConfig()):
        super().__init__()
        self.config = config
        self.text_model = CLIPTextTransformer(config)

    def forward(self, tokens: torch.Tensor, clip_skip: int = 1) -> torch.Tensor:
        """`clip_skip` k > 1 takes the output of the k-th last layer instead (the WebUI's "Clip skip")."""
        if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise CCDMError(f"tokens must be an integer tensor (n, length), got {tuple(tokens.shape)} {tokens.dtype}")
        if not 1 <= tokens.shape[1] <= self.config.max_positions:
            raise CCDMError(f"token length must be 1..{self.config.max_positions}, got {tokens.shape[1]}")
        if not isinstance(clip_skip, int) or not 1 <= clip_skip <= self.config.layers:
            raise CCDMError(f"clip_skip must be an integer in 1..{self.config.layers}, got {clip_skip!r}")
        model = self.text_model
        x = model.embeddings(tokens.long())
        for layer in model.encoder.layers[: len(model.encoder.layers) - clip_skip + 1]:
            x = layer(x)
        return model.final_layer_norm(x)
