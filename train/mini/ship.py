"""The shipped ccdm-mini files, made from the training stages' outputs (`python -m train.mini ship`).

- the base checkpoint in fp16, its yaml naming the tokenizer folder relatively (`ccdm-mini.clip`, found beside it);
- each motion module in fp16, with `ccdm.base_model_sha256` set to that fp16 checkpoint's hash (it was trained on the fp32
  original) and the run's folder paths in `ccdm.train_config` cut to their last part, so the bytes do not depend
  on where the stages ran;
- the subject classifier as it is;
- `SHA256SUMS`, so `sha256sum -c SHA256SUMS` in the shipped folder checks a reproduction.
Every file goes through the canonical safetensors writer: the same weights give the same bytes.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict

import torch

from ccdm_core.errors import CCDMError
from ccdm_core.hashing import file_sha256
from ccdm_core.sd.loader import CLIP_FOLDER_SUFFIX, load_sd_checkpoint, save_sd_checkpoint
from ccdm_core.tensorfile import read_tensors, write_safetensors

BASE = "ccdm-mini.safetensors"
MOTION = {"linear": "ccdm-mini-motion-linear.safetensors",
          "scaled_linear": "ccdm-mini-motion-scaled-linear.safetensors"}
CLASSIFIER = "subject-classifier.safetensors"
PATH_KEYS = ("base", "data", "out", "init", "cache_dir", "video_root")  # folder paths in a run's train_config


def ship_base(run_checkpoint: Path, out: Path) -> Path:
    """fp16 copy of the base stage's checkpoint with a yaml that names its tokenizer folder relatively."""
    model = load_sd_checkpoint(run_checkpoint)
    for part in (model.unet, model.vae, model.text_encoder):
        part.to(dtype=torch.float16)
    path = save_sd_checkpoint(model, out / BASE)
    yaml = path.with_suffix(".yaml")
    folder = path.stem + CLIP_FOLDER_SUFFIX
    text, count = re.subn(r"(?m)^(\s*version:).*$", rf"\1 {folder}", yaml.read_text())
    if count != 1:
        raise CCDMError(f"{yaml}: expected one tokenizer `version:` line, found {count}")
    yaml.write_text(text)
    return path


def portable_train_config(text: str) -> str:
    """A run's train_config JSON with its folder paths cut to their last part."""
    config = json.loads(text or "{}")
    for key in PATH_KEYS:
        if config.get(key):
            config[key] = Path(config[key]).name
    return json.dumps(config, sort_keys=True)


def ship_motion(exported: Path, base_sha256: str, path: Path) -> Path:
    """An exported motion module in fp16, bound to the shipped base by hash, with portable metadata."""
    tensors, metadata = read_tensors(exported)
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    if metadata.get("ccdm.format") != "ccdm-motion":
        raise CCDMError(f"{exported}: not a motion module written by `python -m train export`")
    metadata["ccdm.base_model_sha256"] = base_sha256
    metadata["ccdm.train_config"] = portable_train_config(metadata.get("ccdm.train_config", ""))
    return write_safetensors(tensors, path, metadata)


def ship(run: Path, motions: Dict[str, Path], classifier: Path, out: Path) -> Dict[str, str]:
    """Write every shipped file into `out`; returns file name -> sha256 (also written to SHA256SUMS)."""
    missing = [str(p) for p in [run / BASE, classifier, *motions.values()] if not Path(p).is_file()]
    if missing:
        raise CCDMError(f"ship needs the stages' outputs; missing: {', '.join(missing)}")
    if set(motions) != set(MOTION):
        raise CCDMError(f"ship needs both motion modules ({', '.join(MOTION)}), got {', '.join(motions)}")
    out.mkdir(parents=True, exist_ok=True)
    base = ship_base(run / BASE, out)
    base_sha = file_sha256(base)
    for schedule, exported in motions.items():
        ship_motion(exported, base_sha, out / MOTION[schedule])
    tensors, metadata = read_tensors(classifier)
    write_safetensors(tensors, out / CLASSIFIER, metadata)
    sums = {name: file_sha256(out / name) for name in [BASE, *MOTION.values(), CLASSIFIER]}
    (out / "SHA256SUMS").write_text("".join(f"{sha}  {name}\n" for name, sha in sums.items()))
    return sums
