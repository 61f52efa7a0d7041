"""SD1.x's KL autoencoder (Rombach et al. 2022) around ldm's Encoder/Decoder, keyed like `first_stage_model.*`."""
from __future__ import annotations

import contextlib
import io
from typing import Iterator, Optional

import torch
from torch import nn

from ccdm_core.errors import CCDMError

REQUIRED_DDCONFIG = ("ch", "out_ch", "ch_mult", "num_res_blocks", "attn_resolutions", "in_channels",
                     "resolution", "z_channels")
ATTN_TYPES = ("vanilla", "none")
LOGVAR_RANGE = (-30.0, 20.0)  # the clamp ldm's DiagonalGaussianDistribution applies


def sd15_vae_config() -> dict:
    """SD1.x's VAE ddconfig (v1-inference.yaml), 83.7 M parameters, 8x downsampling, 4 latent channels."""
    return dict(
        double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
        ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0,
    )


def tiny_vae_config() -> dict:
    """SD1.x's VAE layout at 32 base channels (GroupNorm's 32 groups allow no fewer), one res block per level."""
    cfg = sd15_vae_config()
    cfg.update(ch=32, num_res_blocks=1)
    return cfg


def _check_ddconfig(ddconfig: dict, embed_dim: int) -> None:
    missing = [k for k in REQUIRED_DDCONFIG if k not in ddconfig]
    if missing:
        raise CCDMError(f"VAE ddconfig lacks {', '.join(missing)}; required keys: {', '.join(REQUIRED_DDCONFIG)}")
    if not ddconfig.get("double_z", True):
        raise CCDMError("VAE ddconfig.double_z must be true (a KL autoencoder predicts mean and log-variance)")
    if ddconfig.get("attn_type", "vanilla") not in ATTN_TYPES:
        raise CCDMError(f"VAE ddconfig.attn_type must be one of {ATTN_TYPES}, got {ddconfig['attn_type']!r}")
    if not isinstance(embed_dim, int) or embed_dim < 1:
        raise CCDMError(f"VAE embed_dim must be an integer >= 1, got {embed_dim!r}")
    if ddconfig["ch"] % 32:
        raise CCDMError(f"VAE ddconfig.ch must be a multiple of 32 (GroupNorm with 32 groups), got {ddconfig['ch']}")


@contextlib.contextmanager
def _plain_ldm_attention() -> Iterator[object]:
    """Build ldm's VAE with its plain attention block, silently.

    ldm swaps in an xformers block whenever xformers is importable, which cannot run on the CPU; the flag is
    restored on exit. Its per-block construction prints are swallowed.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        from ldm.modules.diffusionmodules import model as ldm_model

        saved = ldm_model.XFORMERS_IS_AVAILBLE
        ldm_model.XFORMERS_IS_AVAILBLE = False
        try:
            yield ldm_model
        finally:
            ldm_model.XFORMERS_IS_AVAILBLE = saved


class AutoencoderKL(nn.Module):
    """Image <-> latent. `encode` gives the unscaled posterior mean (or a sample); `decode` gives images in [-1, 1]."""

    def __init__(self, ddconfig: Optional[dict] = None, embed_dim: int = 4):
        super().__init__()
        ddconfig = dict(sd15_vae_config() if ddconfig is None else ddconfig)
        _check_ddconfig(ddconfig, embed_dim)
        self.ddconfig = ddconfig
        self.embed_dim = embed_dim
        with _plain_ldm_attention() as ldm_model:
            self.encoder = ldm_model.Encoder(**ddconfig)
            self.decoder = ldm_model.Decoder(**ddconfig)
        z_channels = ddconfig["z_channels"]
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ddconfig["ch_mult"]) - 1)

    def encode(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(n, 3, H, W) in [-1, 1] -> (n, embed_dim, H/8, W/8): the mean, or mean + std * noise from `generator`."""
        f, channels = self.downsample_factor, self.ddconfig["in_channels"]
        if x.ndim != 4 or x.shape[1] != channels or x.shape[2] % f or x.shape[3] % f:
            raise CCDMError(f"VAE input must be (n, {channels}, H, W) with H and W multiples of {f}, "
                            f"got {tuple(x.shape)}")
        moments = self.quant_conv(self.encoder(x))
        mean, logvar = moments.chunk(2, dim=1)
        if generator is None:
            return mean
        std = torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE))
        noise = torch.randn(mean.shape, generator=generator, device=generator.device, dtype=torch.float32)
        return mean + std * noise.to(mean)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(n, embed_dim, h, w) unscaled latents -> (n, 3, 8h, 8w) images, nominally in [-1, 1] (not clamped)."""
        if z.ndim != 4 or z.shape[1] != self.embed_dim:
            raise CCDMError(f"VAE latents must be (n, {self.embed_dim}, h, w), got {tuple(z.shape)}")
        return self.decoder(self.post_quant_conv(z))
