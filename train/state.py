"""Training states (module, EMA, optimiser, step, data cursors, RNG) in a run folder, and export to a motion file."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ccdm_core.errors import CCDMError
from ccdm_core.motion_io import load_motion_module, save_motion_module
from ccdm_core.tensorfile import read_tensors

from .config import TrainConfig
from .model import Trainables

STATES = "states"
LATEST = "latest"
TRAINABLES_FILE = "trainables.safetensors"
EMA_FILE = "ema.safetensors"
TRAINING_FILE = "training.pt"  # optimiser, grad scaler and generator states: tensors and numbers only
STATE_FILE = "state.json"


class EMA:
    """Exponential moving average of the trainable weights (fp32), with the usual short warm-up of the decay."""

    def __init__(self, trainables: Trainables, decay: float):
        self.decay = decay
        self.shadow = copy.deepcopy(trainables).requires_grad_(False).eval()

    @torch.no_grad()
    def update(self, trainables: Trainables, step: int) -> None:
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        for avg, live in zip(self.shadow.parameters(), trainables.parameters()):
            avg.lerp_(live.detach().float(), 1.0 - decay)


@dataclasses.dataclass
class TrainingState:
    """What a resumed run needs besides the weights."""

    step: int
    cursors: List[List[int]]  # per rank: (epoch, position)
    skipped: Dict[str, str]
    training: dict  # optimizer, scaler, generators


def _state_name(step: int) -> str:
    return f"step-{step:08d}"


def save_state(run_dir: Path, step: int, trainables: Trainables, ema: Optional[EMA], training: dict,
               cursors: List[List[int]], skipped: Dict[str, str], keep: int) -> Path:
    """Write `states/step-N/` via a temporary folder and a rename, then point `latest` at it; prune old states."""
    states = Path(run_dir) / STATES
    states.mkdir(parents=True, exist_ok=True)
    final = states / _state_name(step)
    tmp = states / f".{final.name}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        meta = {"ccdm.train_step": str(step)}
        trainables.save(tmp / TRAINABLES_FILE, meta)
        if ema is not None:
            ema.shadow.save(tmp / EMA_FILE, dict(meta, **{"ccdm.ema_decay": repr(ema.decay)}))
        torch.save(training, tmp / TRAINING_FILE)
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, "cursors": cursors, "skipped": skipped}),
                                      encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_text_atomic(Path(run_dir) / LATEST, f"{STATES}/{final.name}\n")
    for old in sorted(p for p in states.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def latest_state(run_dir: Path) -> Optional[Path]:
    """The state folder `latest` points at, or None when the run has none yet."""
    pointer = Path(run_dir) / LATEST
    if not pointer.is_file():
        return None
    state = Path(run_dir) / pointer.read_text(encoding="utf-8").strip()
    if not (state / STATE_FILE).is_file():
        raise CCDMError(f"{pointer} points at {state}, which is not a complete training state")
    return state


def resolve_state(path: Path) -> Path:
    """A state folder given directly, or a run folder's latest state."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    if (path / "config.json").is_file():
        state = latest_state(path)
        if state is None:
            raise CCDMError(f"run {path} has no saved state yet (the first is written after --save-every steps)")
        return state
    raise CCDMError(f"{path} is neither a run folder (with config.json) nor a state folder (with {STATE_FILE})")


def load_state(state: Path, trainables: Trainables, ema: Optional[EMA], device: torch.device) -> TrainingState:
    """Load weights into `trainables` (and the EMA), and return the rest of the state."""
    tensors, _ = read_tensors(state / TRAINABLES_FILE)
    trainables.load_tensors({k: v.to(device) for k, v in tensors.items()})
    if ema is not None:
        source = state / EMA_FILE if (state / EMA_FILE).is_file() else state / TRAINABLES_FILE
        ema_tensors, _ = read_tensors(source)
        ema.shadow.load_tensors({k: v.to(device) for k, v in ema_tensors.items()})
    training = torch.load(state / TRAINING_FILE, map_location="cpu", weights_only=True)
    info = json.loads((state / STATE_FILE).read_text(encoding="utf-8"))
    return TrainingState(int(info["step"]), [list(c) for c in info["cursors"]], dict(info["skipped"]), training)


def read_run_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    try:
        return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as err:
        raise CCDMError(f"cannot read the run's configuration {path}: {err}") from err


def export_module(source: Path, out: Path, use_ema: bool = True) -> dict:
    """Write the state's motion (+fusion) weights as a motion file with DESIGN.md's metadata; EMA when present."""
    state = resolve_state(source)
    chosen = state / EMA_FILE if use_ema and (state / EMA_FILE).is_file() else state / TRAINABLES_FILE
    module = load_motion_module(chosen)
    step = module.info.metadata.get("ccdm.train_step", "")
    sha256 = save_motion_module(module, out, {"ccdm.train_step": step, "ccdm.ema": str(chosen.name == EMA_FILE)})
    return {"path": str(Path(out).resolve()), "sha256": sha256, "shorthash": sha256[:10], "state": str(state), "step": int(step or 0),
            "ema": chosen.name == EMA_FILE, "base_model_sha256": module.info.metadata.get("ccdm.base_model_sha256")}

