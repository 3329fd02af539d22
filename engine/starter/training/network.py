"""The starter model's networks, in torch: a small word-level text encoder and a UNet.

The UNet works on 32 px scenes pixel-unshuffled to 16 x 16 x 12 (the fixed "VAE" is a pixel
shuffle), predicts the rectified-flow velocity (noise - image) and is conditioned on the text
encoder's hidden states by cross-attention at every resolution. Two coordinate channels are
concatenated to its input, so "left" and "top" map to places in the image at any image size
(a learned position table would tie the model to one size).

Every module here exports with the TorchScript ONNX exporter, like the diffusers models.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class StarterConfig:
    vocab_size: int
    text_max_length: int = 24
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    latent_channels: int = 12  # 3 colours x 2 x 2 pixels
    channels: tuple[int, ...] = (64, 128, 256)  # at 16, 8 and 4 latent cells per side
    attention_heads: int = 4
    groups: int = 32

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> StarterConfig:
        data = dict(data)
        data["channels"] = tuple(data["channels"])
        return cls(**data)


# --- text encoder -------------------------------------------------------------------------------


class TextEncoder(nn.Module):
    """Word embeddings, learned positions, a few bidirectional pre-norm transformer layers.

    Padding is not masked: it is always padded to ``text_max_length`` the same way, so the
    pad positions learn to be neutral, and the empty prompt (all pads) is the unconditional
    input for classifier-free guidance."""

    def __init__(self, config: StarterConfig) -> None:
        super().__init__()
        width = config.text_width
        self.token_embedding = nn.Embedding(config.vocab_size, width)
        self.position_embedding = nn.Parameter(torch.zeros(1, config.text_max_length, width))
        nn.init.normal_(self.position_embedding, std=0.02)
        layer = nn.TransformerEncoderLayer(
            width, config.text_heads, 4 * width, dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.layers = nn.ModuleList(
            [_copy_layer(layer) for _ in range(config.text_layers)]
        )
        self.final_norm = nn.LayerNorm(width)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.token_embedding(input_ids) + self.position_embedding[:, : input_ids.shape[1]]
        for layer in self.layers:
            x = layer(x)
        x = self.final_norm(x)
        return x, x.mean(dim=1)


def _copy_layer(layer: nn.Module) -> nn.Module:
    import copy

    fresh = copy.deepcopy(layer)
    for parameter in fresh.parameters():
        if parameter.dim() > 1:
            nn.init.xavier_uniform_(parameter)
    return fresh


# --- UNet -----------------------------------------------------------------------------------------


def timestep_features(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of the timestep (sigma x 1000), as in diffusers' UNets."""
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float32, device=timestep.device)
    exponent = -math.log(10000.0) * steps / half
    angles = timestep.float()[:, None] * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def coordinates(x: torch.Tensor) -> torch.Tensor:
    """Two channels, x and y from -1 to 1 across the image, shaped like ``x``'s batch."""
    batch, _, height, width = x.shape
    ys = torch.linspace(-1.0, 1.0, height, dtype=x.dtype, device=x.device).view(1, 1, height, 1)
    xs = torch.linspace(-1.0, 1.0, width, dtype=x.dtype, device=x.device).view(1, 1, 1, width)
    grid = torch.cat([xs.expand(1, 1, height, width), ys.expand(1, 1, height, width)], dim=1)
    return grid.expand(batch, 2, height, width)


class ResBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, time_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.time = nn.Linear(time_dim, channels_out)
        self.norm2 = nn.GroupNorm(groups, channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = (
            nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else None
        )

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(time)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class Attention(nn.Module):
    def __init__(self, width: int, context_width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(width, width, bias=False)
        self.to_k = nn.Linear(context_width, width, bias=False)
        self.to_v = nn.Linear(context_width, width, bias=False)
        self.to_out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        head = width // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, -1, self.heads, head).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
        )
        return self.to_out(out.transpose(1, 2).reshape(batch, tokens, width))


class SpatialTransformer(nn.Module):
    """Self-attention over the image cells, cross-attention to the words, a feed-forward."""

    def __init__(self, channels: int, context_width: int, heads: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.norm1 = nn.LayerNorm(channels)
        self.self_attention = Attention(channels, channels, heads)
        self.norm2 = nn.LayerNorm(channels)
        self.cross_attention = Attention(channels, context_width, heads)
        self.norm3 = nn.LayerNorm(channels)
        self.feed_forward = nn.Sequential(
            nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels)
        )
        self.proj_out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # B x HW x C
        n = self.norm1(h)
        h = h + self.self_attention(n, n)
        h = h + self.cross_attention(self.norm2(h), context)
        h = h + self.feed_forward(self.norm3(h))
        h = h.transpose(1, 2).reshape(batch, channels, height, width)
        return x + self.proj_out(h)


class Level(nn.Module):
    """Res blocks, each followed by a spatial transformer, at one resolution."""

    def __init__(self, channels_in: list[int], channels: int, config: StarterConfig,
                 time_dim: int) -> None:
        super().__init__()
        self.res = nn.ModuleList(
            [ResBlock(c, channels, time_dim, config.groups) for c in channels_in]
        )
        self.attention = nn.ModuleList(
            [
                SpatialTransformer(channels, config.text_width, config.attention_heads,
                                   config.groups)
                for _ in channels_in
            ]
        )


class UNet(nn.Module):
    def __init__(self, config: StarterConfig) -> None:
        super().__init__()
        c = config.channels
        time_dim = 4 * c[0]
        self.time_features = c[0]
        self.time_mlp = nn.Sequential(
            nn.Linear(c[0], time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        self.conv_in = nn.Conv2d(config.latent_channels + 2, c[0], 3, padding=1)

        # Down: one res+attention block per level (then a downsample); up: two per level, each
        # taking one of the down path's outputs, as in diffusers' UNet2DConditionModel.
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [c[0]]
        previous = c[0]
        for i, width in enumerate(c):
            self.down.append(Level([previous], width, config, time_dim))
            skips.append(width)
            previous = width
            if i < len(c) - 1:
                self.downsample.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                skips.append(width)
        self.mid = Level([c[-1]], c[-1], config, time_dim)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, width in reversed(list(enumerate(c))):
            inputs = []
            for _ in range(2):
                inputs.append(previous + skips.pop())
                previous = width
            self.up.append(Level(inputs, width, config, time_dim))
            if i > 0:
                self.upsample.append(nn.Conv2d(width, width, 3, padding=1))
        assert not skips
        self.norm_out = nn.GroupNorm(config.groups, c[0])
        self.conv_out = nn.Conv2d(c[0], config.latent_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        context = encoder_hidden_states
        time = self.time_mlp(timestep_features(timestep, self.time_features))
        h = self.conv_in(torch.cat([sample, coordinates(sample)], dim=1))
        skips = [h]
        for i, level in enumerate(self.down):
            for res, attention in zip(level.res, level.attention, strict=True):
                h = attention(res(h, time), context)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        for res, attention in zip(self.mid.res, self.mid.attention, strict=True):
            h = attention(res(h, time), context)
        for i, level in enumerate(self.up):
            for res, attention in zip(level.res, level.attention, strict=True):
                h = attention(res(torch.cat([h, skips.pop()], dim=1), time), context)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class StarterModel(nn.Module):
    """Both networks, so one state dict (and one optimizer) covers the whole model."""

    def __init__(self, config: StarterConfig) -> None:
        super().__init__()
        self.config = config
        self.text_encoder = TextEncoder(config)
        self.unet = UNet(config)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                input_ids: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.text_encoder(input_ids)
        return self.unet(sample, timestep, hidden)


def pixel_unshuffle(images: torch.Tensor, scaling: float) -> torch.Tensor:
    """uint8 N x H x W x 3 images -> scaled latents N x 12 x H/2 x W/2 (values in [-1, 1]·s)."""
    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return F.pixel_unshuffle(x, 2) * scaling
