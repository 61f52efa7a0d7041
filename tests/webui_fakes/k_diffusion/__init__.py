"""Fake k_diffusion (the WebUI's repositories/k-diffusion): only what the LCM sampler's tests touch."""
