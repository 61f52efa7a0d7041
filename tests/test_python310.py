"""Every project file is Python 3.10 (the WebUI 1.6.0's Python): its grammar, and no standard-library name that
first appeared in 3.11. The checker is tested on snippets that must fail, so it cannot pass vacuously."""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path
from typing import List

import pytest

from env_groups import ROOT, webui_python

SOURCE_DIRS = ("ccdm_core", "train", "scripts", "tests", ".ci")
TOP_FILES = ("install.py", "preload.py")
# module -> names added in Python 3.11 (from the 3.11 "What's New" and the library reference)
NEW_IN_311 = {
    "typing": {"Self", "LiteralString", "Never", "assert_never", "assert_type", "reveal_type", "TypeVarTuple",
               "Unpack", "Required", "NotRequired", "dataclass_transform", "get_overloads", "clear_overloads"},
    "enum": {"StrEnum", "ReprEnum", "EnumCheck", "FlagBoundary", "verify", "member", "nonmember", "global_enum",
             "property", "show_flag_values"},
    "asyncio": {"TaskGroup", "timeout", "timeout_at", "Runner", "Barrier", "BrokenBarrierError"},
    "contextlib": {"chdir"},
    "datetime": {"UTC"},
    "hashlib": {"file_digest"},
    "operator": {"call"},
    "inspect": {"getmembers_static", "markcoroutinefunction"},
    "logging": {"getLevelNamesMapping"},
}
NEW_MODULES_311 = {"tomllib", "wsgiref.types"}
NEW_BUILTINS_311 = {"ExceptionGroup", "BaseExceptionGroup"}


def project_files() -> List[Path]:
    files = [p for d in SOURCE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]
    return files + [ROOT / name for name in TOP_FILES]


def newer_than_310(source: str) -> List[str]:
    """What in `source` needs Python 3.11: grammar, new modules, new names, PEP 646 star-unpacking."""
    try:
        tree = ast.parse(source, feature_version=(3, 10))
    except SyntaxError as exc:
        return [f"line {exc.lineno}: not Python 3.10 grammar ({exc.msg})"]
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Import):
            found += [f"line {line}: module {a.name}" for a in node.names if a.name in NEW_MODULES_311]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in NEW_MODULES_311:
                found.append(f"line {line}: module {node.module}")
            new = NEW_IN_311.get(node.module, set())
            found += [f"line {line}: {node.module}.{a.name}" for a in node.names if a.name in new]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.attr in NEW_IN_311.get(node.value.id, set()) or node.attr == "add_note":
                found.append(f"line {line}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in NEW_BUILTINS_311:
            found.append(f"line {line}: builtin {node.id}")
        elif isinstance(node, ast.arg) and isinstance(node.annotation, ast.Starred):
            found.append(f"line {line}: *args annotated with a star (PEP 646)")
        elif isinstance(node, ast.Subscript) and _starred_in(node.slice):
            found.append(f"line {line}: star-unpacking in a subscript (PEP 646)")
    return found


def _starred_in(node: ast.AST) -> bool:
    items = node.elts if isinstance(node, ast.Tuple) else [node]
    return any(isinstance(item, ast.Starred) for item in items)


@pytest.mark.parametrize("snippet", [
    "try:\n    pass\nexcept* ValueError:\n    pass\n",
    "import tomllib\n",
    "from typing import Self\n",
    "import enum\nclass A(enum.StrEnum):\n    pass\n",
    "raise ExceptionGroup('x', [ValueError()])\n",
    "def f(*args: *Ts): pass\n",
    "x: tuple[int, *Ts]\n",
    "import datetime\nnow = datetime.datetime.now(datetime.UTC)\n",
    "from asyncio import TaskGroup\n",
    "try:\n    pass\nexcept ValueError as e:\n    e.add_note('x')\n",
])
def test_the_checker_flags_what_needs_python_311(snippet):
    assert newer_than_310(snippet)


def test_the_checker_accepts_python_310():
    assert newer_than_310("match x:\n    case 1:\n        pass\nwith (open('a') as a, open('b') as b):\n"
                          "    pass\nfrom typing import TypeAlias, ParamSpec\nimport enum\nclass E(enum.Enum):\n"
                          "    A = 1\n") == []


def test_every_project_file_is_python_310():
    problems = {str(p.relative_to(ROOT)): newer_than_310(p.read_text(encoding="utf-8")) for p in project_files()}
    assert len(problems) > 100
    assert {k: v for k, v in problems.items() if v} == {}


def test_every_project_file_compiles_on_a_real_python_310():
    """ast with feature_version is best effort; the WebUI environment's own Python 3.10 is the real check."""
    python = webui_python()
    if not python.exists():
        pytest.skip(f"no WebUI 1.6.0 environment at {python} (make test creates .venv/webui)")
    code = ("import ast, sys\nbad = []\nfor p in sys.argv[1:]:\n    try:\n        ast.parse(open(p).read(), p)\n"
            "    except SyntaxError as e:\n        bad.append(f'{p}: {e}')\nprint(sys.version_info[:2], bad)\n"
            "sys.exit(1 if bad or sys.version_info[:2] != (3, 10) else 0)\n")
    done = subprocess.run([str(python), "-c", code, *map(str, project_files())], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
