"""Fake WebUI 1.6.0 `modules` package for CCDM's tests (no WebUI code)."""
