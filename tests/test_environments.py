"""The two test environments stay what the README says: the WebUI-side tests run on the WebUI 1.6.0's own Python
and pins (read from requirements-webui.txt), and the split of test files follows what they import."""
from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from env_groups import ROOT, runs_in_webui_env, webui_closure

# the pins the extension meets in users' WebUI 1.6.0 (WEBUI.md); requirements-webui.txt must hold each of them
WEBUI_CORE = ("torch", "torchvision", "numpy", "einops", "safetensors", "Pillow", "transformers", "omegaconf",
              "gradio", "fastapi", "httpx")


def top_level_pins(path: Path) -> dict:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_the_webui_list_pins_the_webui_versions():
    pins = top_level_pins(ROOT / "requirements-webui.txt")
    assert {name.lower() for name in WEBUI_CORE} <= set(pins)
    assert pins["torch"] == "2.0.1" and pins["numpy"] == "1.23.5" and pins["gradio"] == "3.41.2"


def test_each_lock_pins_every_package_of_its_list():
    for env in ("dev", "webui"):
        lock = top_level_pins(ROOT / f"requirements-{env}.lock")
        listed = {re.split(r"[=<>\s#\[]", line.strip())[0].lower().replace("_", "-")
                  for line in (ROOT / f"requirements-{env}.txt").read_text().splitlines()
                  if line.strip() and not line.startswith("#")}
        normalised = {name.replace("_", "-") for name in lock}
        assert listed <= normalised, (env, listed - normalised)
        text = (ROOT / f"requirements-{env}.lock").read_text()
        assert all("==" in line for line in text.splitlines() if line and not line.startswith("#"))


@pytest.mark.webui_env
def test_webui_side_tests_run_on_the_webui_python_and_pins():
    try:
        gradio = version("gradio")
    except PackageNotFoundError:
        gradio = None
    if gradio != "3.41.2":
        pytest.skip("runs in the WebUI 1.6.0 environment (make test-webui-env)")
    assert sys.version_info[:2] == (3, 10)
    pins = top_level_pins(ROOT / "requirements-webui.txt")
    installed = {name: version(name).split("+")[0] for name in WEBUI_CORE}
    assert installed == {name: pins[name.lower()] for name in WEBUI_CORE}


def test_test_files_are_split_by_what_they_import():
    webui_side = {p.name for p in (ROOT / "tests").glob("test_*.py") if runs_in_webui_env(p)}
    assert {"test_webui_script.py", "test_webui_ui.py", "test_timeline_browser.py", "test_control_hints.py",
            "test_motion.py", "test_windows.py"} <= webui_side
    assert not {"test_cli.py", "test_pipeline.py", "test_train_fit.py", "test_train_losses.py"} & webui_side
    assert "test_sampling.py" in webui_side  # the WebUI's LCM sampler runs ccdm_core.lcm and its sampling helpers
    assert {"ccdm_core.webui.runtime", "ccdm_core.motion", "ccdm_core.windows"} <= webui_closure()
    assert not {"ccdm_core.cli", "ccdm_core.pipeline", "train.loop"} & webui_closure()
