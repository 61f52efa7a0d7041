# Two commands: `make demo` and `make test`. Each creates .venv/ when missing and installs from the registries.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ccdm-installed
DEMO_OUT ?= outputs/demo.mp4

.PHONY: demo test test-webui bench clean-venv

$(STAMP): pyproject.toml requirements-dev.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check --no-deps stable-diffusion-sdkit==2.1.5 clip-anytorch==2.6.0
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ccdm generate --prompt "a cat, camera zooms in" --frames 16 --fps 8 --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q -m "not webui and not slow"

test-webui: $(STAMP)
	$(PY) -m pytest -q -m webui

clean-venv:
	rm -rf $(VENV)
