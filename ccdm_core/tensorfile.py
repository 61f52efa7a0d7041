"""Reading and atomically writing tensor files: safetensors, or pickles through torch.load(weights_only=True)."""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from .errors import CCDMError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SUFFIXES = (".safetensors",) + PICKLE_SUFFIXES


def read_tensors(path: str | os.PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """All tensors of a file (CPU) and its string metadata; a nested `state_dict` is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise CCDMError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
        return _read_pickle(path), {}
    raise CCDMError(f"{path.name}: unsupported file type {suffix or '(none)'}; accepted: {', '.join(SUFFIXES)}")


def _read_safetensors(path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    except Exception as err:  # safetensors raises its own error types for truncated or corrupt files
        raise CCDMError(f"{path.name}: unreadable safetensors file ({_first_line(err)})") from err
    return tensors, metadata


def _read_pickle(path: Path) -> Dict[str, torch.Tensor]:
    name = str(path)
    try:
        obj = torch.load(name, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err).lower()
        if "operand" in text or "load key" in text or "weights only" not in text and "global" not in text:
            raise CCDMError(f"{path.name}: unreadable checkpoint ({_first_line(err)})") from err
        raise CCDMError(f"{path.name}: refused, the pickle needs code to load (only plain tensors are accepted "
                        f"through torch.load(weights_only=True)); convert it to .safetensors") from err
    except Exception as err:  # truncated zip archives and other corruption
        raise CCDMError(f"{path.name}: unreadable checkpoint ({_first_line(err)})") from err
    return _tensor_dict(obj, path.name)


def _tensor_dict(obj, name: str) -> Dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CCDMError(f"{name}: holds a {type(obj).__name__}, not a dictionary of tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CCDMError(f"{name}: contains no tensors")
    return tensors


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_safetensors(tensors: Dict[str, torch.Tensor], path: str | os.PathLike,
                      metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write safetensors atomically (temporary file in the same folder, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
