"""Fake k_diffusion.sampling: its module-level `torch` (the WebUI replaces it with TorchHijack while sampling)."""
import torch  # noqa: F401
