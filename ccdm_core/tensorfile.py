"""Reading and atomically writing tensor files: safetensors, or pickles through torch.load(weights_only=True)."""
from __future__ import annotations

import json
import os
import pickle
import struct
import sys
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


# safetensors dtype names; the writer below lays tensors out by falling item size so every offset stays aligned.
SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                      torch.uint8: "U8", torch.bool: "BOOL"}


def safetensors_bytes(tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None):
    """The header bytes and the tensors' bytes (uint8 views) of a safetensors file, in one canonical order.

    The `safetensors` package writes metadata in a different order in every process, so the same weights would
    get a different file hash each time. Here metadata keys are sorted and tensors are ordered by (falling item
    size, name): the same tensors and metadata always give the same bytes (little-endian, as the format says).
    """
    if sys.byteorder != "little":
        raise CCDMError("writing safetensors needs a little-endian machine")
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise CCDMError(f"safetensors metadata must map strings to strings, got {key!r}: {value!r}")
    unknown = sorted({str(t.dtype) for t in tensors.values() if t.dtype not in SAFETENSORS_DTYPES})
    if unknown:
        raise CCDMError(f"cannot write {', '.join(unknown)} to safetensors; accepted: "
                        f"{', '.join(str(d) for d in SAFETENSORS_DTYPES)}")
    names = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header, buffers, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    for name in names:
        tensor = tensors[name].detach().contiguous().cpu()
        data = tensor.reshape(-1).view(torch.uint8) if tensor.numel() else torch.empty(0, dtype=torch.uint8)
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + data.numel()]}
        buffers.append(data)
        offset += data.numel()
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, buffers


def write_safetensors(tensors: Dict[str, torch.Tensor], path: str | os.PathLike,
                      metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write safetensors atomically (temporary file in the same folder, then rename); same input, same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head, buffers = safetensors_bytes(tensors, metadata)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(head)
            for data in buffers:  # uint8 views of the tensors: written without a second copy
                fh.write(data.numpy().data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
