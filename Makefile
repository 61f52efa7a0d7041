# Two commands: `make demo` and `make test`. Each creates .venv/ when missing and installs from the registries.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ccdm-installed
DEMO_OUT ?= outputs/demo.mp4
# gradio 3.41.2 (the WebUI 1.6.0 pin) serves only with fastapi 0.94 and numpy<2, so the WebUI UI test runs in a
# second venv inside the first. Step 2 lowers numpy, Pillow, einops and safetensors to the WebUI's pins (no resolver: it backtracks).
GRADIO3 ?= $(VENV)/gradio3
GRADIO3_STAMP := $(GRADIO3)/.ccdm-installed
# The keyframe timeline's browser test drives Debian's chromium with Playwright (its own browser download fails).
CHROMIUM_STAMP := $(VENV)/.ccdm-chromium

.PHONY: demo test test-webui bench clean-venv mini-weights

$(STAMP): pyproject.toml requirements-dev.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check --no-deps stable-diffusion-sdkit==2.1.5 clip-anytorch==2.6.0
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt playwright
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(GRADIO3_STAMP): Makefile $(STAMP)
	test -x $(GRADIO3)/bin/python || $(PYTHON) -m venv $(GRADIO3)
	$(GRADIO3)/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 gradio==3.41.2 fastapi==0.94.0 httpx==0.24.1 "numpy<2"
	$(GRADIO3)/bin/python -m pip install -q --disable-pip-version-check --no-deps numpy==1.23.5 matplotlib==3.7.5 contourpy==1.1.1 Pillow==9.5.0 einops==0.4.1 safetensors==0.3.1 imageio-ffmpeg
	touch $(GRADIO3_STAMP)

$(CHROMIUM_STAMP): $(STAMP)
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
		echo "WARNING: chromium is missing and apt-get could not install it; the browser test will be skipped"
	(command -v chromium || command -v chromium-browser) >/dev/null && touch $(CHROMIUM_STAMP) || true

demo: $(STAMP)
	$(VENV)/bin/ccdm generate --prompt "a flower, camera zooms in" --frames 16 --fps 8 --out $(DEMO_OUT)

test: $(STAMP) $(GRADIO3_STAMP) $(CHROMIUM_STAMP)
	$(PY) -m pytest -q -m "not webui and not slow"

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
