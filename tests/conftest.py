"""Shared fixtures: tiny real ldm UNets (SD1 block layout, small widths), CPU, seeded."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ccdm_core.sd.configs import build_unet, tiny_unet_config
from env_groups import runs_in_webui_env


def pytest_collection_modifyitems(config, items):
    """Mark the tests of WebUI-side code `webui_env`: `make test` runs them in the WebUI 1.6.0 environment."""
    decided = {}
    for item in items:
        path = Path(str(item.fspath))
        if path not in decided:
            decided[path] = runs_in_webui_env(path)
        if decided[path]:
            item.add_marker(pytest.mark.webui_env)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and OpenMP threads stall badly on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_unet(seed: int = 0, model_channels: int = 32, context_dim: int = 32):
    """A tiny ldm UNet whose zero-initialised output layers get small random weights, so outputs are not 0."""
    torch.manual_seed(seed)
    unet = build_unet(tiny_unet_config(model_channels, context_dim)).eval()
    with torch.no_grad():
        for p in unet.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0.0, 0.05)
    return unet


def make_sdxl_unet(seed: int = 0, model_channels: int = 32, context_dim: int = 32):
    """A tiny SDXL-structure ldm UNet (the WebUI's sgm UNet cannot be installed here): SDXL's 3 levels (channel
    mult 1, 2, 4; 2 ResBlocks each; 9 input and 9 output blocks), no attention at the first level, and a
    label-embedding `y` input (a continuous vector of 1, standing in for SDXL's pooled-text/size vector)."""
    torch.manual_seed(seed)
    cfg = tiny_unet_config(model_channels, context_dim)
    cfg.update(channel_mult=(1, 2, 4), attention_resolutions=(2, 4), num_res_blocks=2, num_classes="continuous")
    unet = build_unet(cfg).eval()
    with torch.no_grad():
        for p in unet.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0.0, 0.05)
    return unet


@pytest.fixture
def tiny_unet():
    return make_unet()


def unet_inputs(frames: int, videos: int = 1, size: int = 8, context_dim: int = 32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    n = frames * videos
    x = torch.randn(n, 4, size, size, generator=g)
    t = torch.full((n,), 500.0)
    ctx = torch.randn(n, 5, context_dim, generator=g)
    return x, t, ctx


def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Give every parameter (including zero-initialised outputs) random values so the module does something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module
