"""Fake modules.sd_hijack: no optimisation selected (CCDM falls back to SDPA)."""
current_optimizer = None
