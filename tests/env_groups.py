"""Which test files run in which environment, decided from the imports (no list to keep up to date).

Code that runs inside the WebUI is `ccdm_core/webui/`, `scripts/`, `install.py`, `preload.py` and every project
module they import, transitively. A test file whose project imports all lie in that set (its tiny-UNet builder
`ccdm_core.sd.configs` aside) tests WebUI-side code only, so it runs in the WebUI 1.6.0 environment
(`.venv/webui`: Python 3.10, torch 2.0.1, gradio 3.41.2, ...); every other test file runs in the main one.
"""
from __future__ import annotations

import ast
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Dict, FrozenSet, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ccdm_core", "train")
WEBUI_ENTRY_FILES = ("install.py", "preload.py")
FIXTURE_MODULES = frozenset({"ccdm_core", "ccdm_core.sd", "ccdm_core.sd.configs"})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_names(path: Path) -> Set[str]:
    """Every dotted name an import statement of the file names (anywhere in it, lazy imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = module_name(path) if path.is_relative_to(ROOT) else path.stem
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


@lru_cache(maxsize=1)
def project_modules() -> Dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def project_imports(path: Path) -> Set[str]:
    """The project modules a file imports (a name resolves to its longest module prefix)."""
    modules, found = project_modules(), set()
    for name in imported_names(path):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


@lru_cache(maxsize=1)
def webui_closure() -> FrozenSet[str]:
    """Project modules that run inside the WebUI: what its entry points import, transitively, with parents."""
    entries = list((ROOT / "ccdm_core" / "webui").rglob("*.py")) + list((ROOT / "scripts").glob("*.py"))
    entries += [ROOT / name for name in WEBUI_ENTRY_FILES]
    todo = {m for path in entries for m in project_imports(path)}
    seen: Set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo |= project_imports(project_modules()[module])
        parts = module.split(".")
        todo |= {".".join(parts[:i]) for i in range(1, len(parts))}
    return frozenset(seen)


def runs_in_webui_env(test_file: Path) -> bool:
    """True when everything the test file imports from the project runs inside the WebUI."""
    imports = project_imports(test_file)
    webui_side = webui_closure()
    uses_entry = bool({n.split(".")[0] for n in imported_names(test_file)} & {"install", "preload", "scripts"})
    tested = (imports - FIXTURE_MODULES) & webui_side
    return (bool(tested) or uses_entry) and imports <= webui_side | FIXTURE_MODULES


def webui_python() -> Path:
    """The interpreter of the WebUI 1.6.0 environment: this one when it has gradio 3.41.2 (`make test` runs the
    WebUI-side tests there), else CCDM_WEBUI_PYTHON, else `.venv/webui`'s (which may not exist yet)."""
    try:
        from importlib.metadata import version

        if version("gradio") == "3.41.2":
            return Path(sys.executable)
    except ImportError:
        pass
    return Path(os.environ.get("CCDM_WEBUI_PYTHON", ROOT / ".venv" / "webui" / "bin" / "python"))
