"""The engine imports with the WebUI (`modules`) and gradio blocked; only ccdm_core/webui's glue may need them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GLUE = {"ccdm_core.webui.script", "ccdm_core.webui.ui", "ccdm_core.webui.tab", "ccdm_core.webui.api",
        "ccdm_core.webui.entry", "ccdm_core.webui.source_ui", "ccdm_core.webui.steady_ui",
        "ccdm_core.webui.motion_lora_ui"}

CODE = """
import importlib, importlib.abc, pkgutil, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"modules", "gradio", "launch"}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import ccdm_core, train
names = [m.name for pkg in (ccdm_core, train) for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
skip = set(sys.argv[1:])
for name in names:
    if name not in skip and not name.endswith("__main__"):
        importlib.import_module(name)
print(len(names))
"""


def test_engine_and_training_import_without_webui_or_gradio():
    out = subprocess.run([sys.executable, "-c", CODE, *sorted(GLUE)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip().splitlines()[-1]) > 40
