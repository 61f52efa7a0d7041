"""sha256 of files (the identity of motion modules and checkpoints), cached by path, size and mtime."""
from __future__ import annotations

import hashlib
import os
from typing import Dict, Tuple

_CACHE: Dict[Tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """Full hex sha256 of a file, streamed in 1 MiB chunks; cached until the file changes."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        digest = hashlib.sha256()
        with open(real, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _CACHE[key] = digest.hexdigest()
    return _CACHE[key]


def shorthash(sha256: str) -> str:
    """The 10-hex shorthash the WebUI shows in infotext."""
    return sha256[:10]
