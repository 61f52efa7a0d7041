# Two commands: `make demo` and `make test`. Each creates its environments when missing, from complete pinned lists
# (`pip install --no-deps --no-build-isolation -r *.lock`: pip resolves nothing, so every install is the same).
# `make lock` regenerates the lists from the top-level ones (requirements-*.txt) and prints what changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ccdm-installed
DEMO_OUT ?= outputs/demo.mp4
# --no-cache-dir: a fresh machine has no use for a second copy of every wheel (about 3.5 GB for the two environments).
PIP_NO_RESOLVE := -m pip install -q --disable-pip-version-check --no-cache-dir --no-deps --no-build-isolation
# Free disk each environment needs while it installs (wheels unpacked plus the installed files), checked first so a
# full disk is said up front instead of as an OSError half-way through pip.
NEED_SPACE := .ci/need-space
# The WebUI 1.6.0 environment: its Python (3.10) and its pins (torch 2.0.1, gradio 3.41.2, numpy 1.23.5, ...).
# The WebUI-side tests run there (tests/env_groups.py decides which). Python 3.10 is pyenv's where the PATH has none.
ifeq ($(origin PYTHON310),undefined)
PYTHON310 := $(firstword $(foreach p,python3.10 $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python3.10),\
	$(shell $(p) -c "import sys; assert sys.version_info[:2] == (3, 10); print('$(p)')" 2>/dev/null)))
endif
WEBUI_VENV ?= $(VENV)/webui
WEBUI_PY := $(WEBUI_VENV)/bin/python
WEBUI_STAMP := $(WEBUI_VENV)/.ccdm-installed
# The keyframe timeline's browser test drives Debian's chromium with Playwright (its own browser download fails).
CHROMIUM_STAMP := $(VENV)/.ccdm-chromium
PYTEST_SELECT := not webui and not slow

.PHONY: demo test test-main test-webui-env test-webui envs bench clean-venv mini-weights lock

# A fresh venv each time: a changed lock gives the listed set exactly, nothing left over from the previous one
# (the WebUI environment inside it is kept; it has its own lock and stamp).
$(STAMP): requirements-dev.lock pyproject.toml Makefile
	test ! -d $(VENV) || find $(VENV) -mindepth 1 -maxdepth 1 ! -name webui -exec rm -rf {} +
	@$(NEED_SPACE) 3 "the main environment ($(VENV))"
	$(PYTHON) -m venv $(VENV)
	$(PY) $(PIP_NO_RESOLVE) $$(grep -E '^(setuptools|wheel)==' requirements-dev.lock)
	$(PY) $(PIP_NO_RESOLVE) -r requirements-dev.lock
	$(PY) $(PIP_NO_RESOLVE) -e .
	touch $(STAMP)

$(WEBUI_STAMP): requirements-webui.lock pyproject.toml Makefile
	@test -n "$(PYTHON310)" || { echo "make: no Python 3.10 for the WebUI 1.6.0 environment; set PYTHON310=" >&2; \
		exit 1; }
	$(PYTHON310) -m venv --clear $(WEBUI_VENV)
	@$(NEED_SPACE) 9 "the WebUI 1.6.0 environment ($(WEBUI_VENV))"
	$(WEBUI_PY) $(PIP_NO_RESOLVE) $$(grep -E '^(setuptools|wheel)==' requirements-webui.lock)
	$(WEBUI_PY) $(PIP_NO_RESOLVE) -r requirements-webui.lock
	$(WEBUI_PY) $(PIP_NO_RESOLVE) -e .
	touch $(WEBUI_STAMP)

$(CHROMIUM_STAMP): $(STAMP)
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
		echo "WARNING: chromium is missing and apt-get could not install it; the browser test will be skipped"
	(command -v chromium || command -v chromium-browser) >/dev/null && touch $(CHROMIUM_STAMP) || true

envs: $(STAMP) $(WEBUI_STAMP) $(CHROMIUM_STAMP)

lock:
	$(PYTHON) .ci/lock.py requirements-dev.txt requirements-dev.lock $(PYTHON)
	$(PYTHON) .ci/lock.py requirements-webui.txt requirements-webui.lock $(PYTHON310)

demo: $(STAMP)
	$(VENV)/bin/ccdm generate --prompt "a flower, camera zooms in" --frames 16 --fps 8 --out $(DEMO_OUT)

# Phase by phase, each timed (.ci/phase): the environments, then the two test groups.
PHASE := .ci/phase
test:
	@$(PHASE) "set-up: main environment (.venv)" $(MAKE) --no-print-directory $(STAMP)
	@$(PHASE) "set-up: WebUI 1.6.0 environment (.venv/webui)" $(MAKE) --no-print-directory $(WEBUI_STAMP)
	@$(PHASE) "set-up: chromium for the browser test" $(MAKE) --no-print-directory $(CHROMIUM_STAMP)
	@$(PHASE) "tests: engine, CLI, training (main env)" $(MAKE) --no-print-directory test-main
	@$(PHASE) "tests: WebUI side (WebUI 1.6.0 env)" $(MAKE) --no-print-directory test-webui-env

# The engine, the standalone CLI and training, on the main environment.
test-main: $(STAMP)
	$(PY) -m pytest -q -m "$(PYTEST_SELECT) and not webui_env"

# The WebUI-side code (ccdm_core/webui/, what it imports, scripts/, install.py, preload.py, the UI, the timeline)
# on the WebUI 1.6.0 environment.
test-webui-env: $(WEBUI_STAMP) $(CHROMIUM_STAMP)
	$(WEBUI_PY) -m pytest -q -m "$(PYTEST_SELECT) and webui_env"

test-webui: $(STAMP)
	$(PY) -m pytest -q -m webui

# Retrains every shipped ccdm-mini file from scratch, one torch thread per stage (about 110 minutes on 2 CPU cores),
# then checks the bytes against the shipped SHA256SUMS. The folder names below are recorded in the motion modules'
# metadata, so they are part of the recipe. ccdm_core/assets/ccdm-mini/MODEL_CARD.md explains each stage.
MINI_OUT ?= build/mini-weights
MOTION_FIT := --steps 3500 --batch-size 1 --frames 16 --stride 1 --size 64 --lr 2e-4 --warmup 100 --cache-latents \
	--workers 0 --validate-every 0 --save-every 500 --seed 0 --max-frames 24 --quiet
mini-weights: $(STAMP)
	mkdir -p $(MINI_OUT)
	cd $(MINI_OUT) && $(abspath $(PY)) -m train.mini vae --out mini --threads 1
	cd $(MINI_OUT) && $(abspath $(PY)) -m train.mini base --out mini --threads 1 --steps 3500
	cd $(MINI_OUT) && $(abspath $(PY)) -m train.mini classifier --out mini/cls --threads 1
	cd $(MINI_OUT) && $(abspath $(PY)) -m train.mini clips --out clips
	cd $(MINI_OUT) && for betas in linear scaled_linear; do \
		OMP_NUM_THREADS=1 $(abspath $(PY)) -m train fit --base mini/ccdm-mini.safetensors --data clips \
			--out run-$$betas --beta-schedule $$betas $(MOTION_FIT) && \
		$(abspath $(PY)) -m train export run-$$betas --out mm-$$betas.safetensors || exit 1; done
	cd $(MINI_OUT) && $(abspath $(PY)) -m train.mini ship --run mini --linear mm-linear.safetensors \
		--scaled-linear mm-scaled_linear.safetensors --classifier mini/cls/subject-classifier.safetensors --out shipped
	cd $(MINI_OUT)/shipped && sha256sum -c $(abspath ccdm_core/assets/ccdm-mini/SHA256SUMS)

clean-venv:
	rm -rf $(VENV)
