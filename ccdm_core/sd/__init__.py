"""Stable Diffusion 1.x model parts for the standalone engine (ldm UNet, VAE, CLIP text encoder)."""
