"""Finding motion modules in folders and selecting one by name, file name, sha256 or shorthash."""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from ..hashing import file_sha256
from .settings import CCDMSettingsError

MOTION_SUFFIXES = (".safetensors", ".ckpt", ".pth")
SHORTHASH_LENGTH = 10
_LABEL_HASH = re.compile(r"\[([0-9a-fA-F]{6,64})\]\s*$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")

# sha256_fn(path, name) -> full hex sha256, or None when hashing is off (the WebUI's --no-hashing)
Sha256Fn = Callable[[str, str], Optional[str]]


@dataclasses.dataclass(frozen=True)
class MotionEntry:
    """One motion-module file: its display name, path and (when known) full sha256."""

    name: str
    path: str
    sha256: Optional[str] = None

    @property
    def filename(self) -> str:
        return os.path.basename(self.path)

    @property
    def shorthash(self) -> Optional[str]:
        return self.sha256[:SHORTHASH_LENGTH] if self.sha256 else None

    @property
    def label(self) -> str:
        """What the UI lists and infotext records: `name [shorthash]`."""
        return f"{self.name} [{self.shorthash}]" if self.sha256 else self.name


def default_sha256(path: str, name: str) -> Optional[str]:
    """Outside the WebUI: the engine's cached file hash."""
    return file_sha256(path)


def find_motion_files(folders: Iterable[str]) -> List[Tuple[str, str]]:
    """(name, path) of every motion-module file under the folders (recursively), first folder wins on names."""
    found, seen_paths, seen_names = [], set(), set()
    for folder in folders:
        if not folder or not os.path.isdir(folder):
            continue
        for path in sorted(_walk(folder)):
            real = os.path.realpath(path)
            if real in seen_paths:
                continue
            seen_paths.add(real)
            name = Path(os.path.relpath(path, folder)).with_suffix("").as_posix()
            if name in seen_names:
                name = f"{name} ({Path(folder).name})"
            seen_names.add(name)
            found.append((name, path))
    return found


LORA_FOLDER = "lora"  # models/ccdm/lora holds motion LoRAs, not motion modules


def _walk(folder: str) -> Iterable[str]:
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d.lower() != LORA_FOLDER)
        for filename in files:
            if not filename.startswith(".") and filename.lower().endswith(MOTION_SUFFIXES):
                yield os.path.join(root, filename)


def list_motion_modules(folders: Iterable[str], sha256_fn: Sha256Fn = default_sha256) -> List[MotionEntry]:
    """Every motion module under the folders, hashed through `sha256_fn` (the WebUI's cache inside the WebUI)."""
    return [MotionEntry(name, path, sha256_fn(path, name)) for name, path in find_motion_files(folders)]


def label_hash(text: str) -> Optional[str]:
    """The hash in `name [hash]`, lower case, or None."""
    m = _LABEL_HASH.search(text or "")
    return m.group(1).lower() if m else None


def _by_hash(entries: Sequence[MotionEntry], digest: str) -> List[MotionEntry]:
    digest = digest.lower()
    return [e for e in entries if e.sha256 and e.sha256.lower().startswith(digest)]


def resolve_motion_module(entries: Sequence[MotionEntry], query: str, folders: Sequence[str] = ()) -> MotionEntry:
    """Select by listed label, name, file name, full sha256, shorthash, or the hash inside `name [hash]`."""
    query = (query or "").strip()
    if not entries:
        raise CCDMSettingsError("motion_module", no_module_message(folders))
    if not query:
        return entries[0]
    for attr in ("label", "name", "filename"):
        matches = [e for e in entries if getattr(e, attr) == query]
        if matches:
            return matches[0]
    digest = label_hash(query) or (query if _HEX.match(query) and len(query) in (SHORTHASH_LENGTH, 64) else None)
    if digest:
        matches = _by_hash(entries, digest)
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise CCDMSettingsError("motion_module", f"hash {digest} matches several modules: "
                                    f"{', '.join(e.label for e in matches)}; give the full sha256 or a name")
    listed = ", ".join(e.label for e in entries[:10]) + (" ..." if len(entries) > 10 else "")
    raise CCDMSettingsError("motion_module", f"no motion module {query!r}; accepted: a listed name, a file name, a "
                            f"full sha256 or a {SHORTHASH_LENGTH}-hex shorthash of one of: {listed}")


def no_module_message(folders: Sequence[str]) -> str:
    """The message shown when no motion module is found: where to put one."""
    where = " or ".join(str(f) for f in folders if f) or "models/ccdm"
    return (f"no motion module found; put a motion module ({', '.join(MOTION_SUFFIXES)}, e.g. AnimateDiff's "
            f"mm_sd_v15_v2.ckpt or a CCDM .safetensors) into {where} and press refresh")
