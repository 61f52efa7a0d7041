"""ccdm-mini: the project's own small SD1-architecture model and motion modules, trained on bundled photos."""
