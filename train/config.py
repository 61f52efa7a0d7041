"""Training configuration: one frozen, validated dataclass, serialised by field name into states and checkpoints."""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from typing import Dict, Mapping, Tuple

from ccdm_core.errors import CCDMError
from ccdm_core.fusion import FusionSettings
from ccdm_core.schedules import BETA_SCHEDULES, make_betas

SCHEMA = "1"
TIMESTEPS = 1000  # DDPM steps of every SD1.x schedule (the paper's configurations A/B/C)
LAYOUTS = ("animatediff-v2", "animatediff-v3", "ccdm")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
DECODERS = ("auto", "opencv", "ffmpeg")
# May differ when a run is resumed: they change neither the data order nor the optimisation.
RESUMABLE_CHANGES = frozenset({
    "steps", "save_every", "keep_states", "validate_every", "validation_prompt", "validation_steps",
    "log_every", "workers", "decoder",
})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (paths, data, model, loss, optimiser, schedule, bookkeeping)."""

    base: str = "default"  # SD1.x single-file checkpoint, or "default": the engine's built-in tiny model
    data: str = ""  # folder of videos, WebVid-style CSV, or JSONL
    out: str = ""  # run folder: states, samples, log
    video_root: str = ""  # folder that relative video paths of a CSV/JSONL start from (default: its folder)
    # data
    frames: int = 24
    stride: int = 4
    size: int = 256
    caption_dropout: float = 0.1
    decoder: str = "auto"
    workers: int = 2
    cache_latents: bool = False
    cache_dir: str = ""  # default: <out>/latents
    cache_frames: int = 0  # latent frames cached per video; 0 = --frames (one fixed clip per video)
    # model
    layout: str = "animatediff-v2"
    max_frames: int = 32
    init: str = ""  # start from this motion module file instead of a fresh (identity) one
    train_fusion: bool = False  # also train the fusion projections (through the keyframe term)
    fusion_strength: float = 0.5
    fusion_mode: str = "temporal"
    # loss (eq. 13) and diffusion schedule (table 3)
    lambda1: float = 0.1
    k: int = 2
    lambda2: float = 0.1
    keyframe_prob: float = 0.5
    keyframe_snr_gamma: float = 5.0  # 0: plain x0-MSE; else min(SNR, gamma) per clip (Hang et al. 2023)
    beta_schedule: str = "linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    # optimisation
    steps: int = 10000
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup: int = 500
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    ema_decay: float = 0.0  # 0 = no EMA
    precision: str = "auto"
    device: str = "auto"
    gradient_checkpointing: bool = False
    seed: int = 0
    # bookkeeping
    save_every: int = 1000
    keep_states: int = 3
    validate_every: int = 1000  # 0 = never
    validation_prompt: str = ""  # default: the first caption of the data
    validation_steps: int = 20
    log_every: int = 10

    def __post_init__(self):
        _check_ints(self)
        _check_floats(self)
        _check_bools(self)
        _check_choices(self)
        if self.frames > self.max_frames:
            raise CCDMError(f"frames {self.frames} exceeds max_frames {self.max_frames}; accepted 1..{self.max_frames}")
        if self.size % 64:
            raise CCDMError(f"size {self.size} is not a multiple of 64 (the UNet halves the latent 3 times); "
                            f"accepted 64..2048 in steps of 64")
        if self.cache_frames and self.cache_frames < self.frames:
            raise CCDMError(f"cache_frames {self.cache_frames} is below frames {self.frames}; accepted 0 or "
                            f"{self.frames}..4096")
        if self.ema_decay and not 0.5 <= self.ema_decay < 1.0:
            raise CCDMError(f"ema_decay must be 0 (off) or in [0.5, 1), got {self.ema_decay}")
        make_betas(self.beta_schedule, self.beta_start, self.beta_end, TIMESTEPS)  # validates the betas
        FusionSettings(strength=self.fusion_strength, mode=self.fusion_mode)  # validates the fusion options
        if self.train_fusion and not self.lambda2:
            raise CCDMError("train_fusion needs the keyframe term (lambda2 > 0): fusion is trained through it")

    @property
    def clip_frames(self) -> int:
        """Frames decoded per video: a training clip, or the cached span windows are drawn from."""
        return self.cache_frames or self.frames

    def to_json(self) -> str:
        return json.dumps(dict(dataclasses.asdict(self), schema=SCHEMA), sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names - {"schema"})
        if unknown:
            raise CCDMError(f"unknown training option(s) {', '.join(unknown)}; accepted: {', '.join(sorted(names))}")
        return cls(**{k: v for k, v in values.items() if k in names})


_INT_RANGES: Dict[str, Tuple[int, int]] = {
    "frames": (1, 1024), "stride": (1, 64), "size": (64, 2048), "workers": (0, 64), "cache_frames": (0, 4096),
    "max_frames": (1, 1024), "k": (1, 64), "steps": (1, 10**9), "batch_size": (1, 1024), "warmup": (0, 10**9),
    "grad_accum": (1, 1024), "seed": (0, 2**63 - 1), "save_every": (1, 10**9), "keep_states": (1, 1000),
    "validate_every": (0, 10**9), "validation_steps": (1, 500), "log_every": (1, 10**9),
}
_FLOAT_RANGES: Dict[str, Tuple[float, float]] = {
    "caption_dropout": (0.0, 1.0), "lambda1": (0.0, 1000.0), "lambda2": (0.0, 1000.0), "keyframe_prob": (0.0, 1.0),
    "keyframe_snr_gamma": (0.0, 1e6), "lr": (1e-12, 1.0), "weight_decay": (0.0, 10.0),
    "max_grad_norm": (0.0, 1e6), "ema_decay": (0.0, 0.999999),
}


def _check_ints(cfg: TrainConfig) -> None:
    for name, (low, high) in _INT_RANGES.items():
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
            raise CCDMError(f"{name} must be an integer in {low}..{high}, got {value!r}")


def _check_floats(cfg: TrainConfig) -> None:
    for name, (low, high) in _FLOAT_RANGES.items():
        value = getattr(cfg, name)
        ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
        if not ok or not low <= value <= high:
            raise CCDMError(f"{name} must be a number in {low:g}..{high:g}, got {value!r}")


def _check_bools(cfg: TrainConfig) -> None:
    for name in ("cache_latents", "train_fusion", "gradient_checkpointing"):
        if not isinstance(getattr(cfg, name), bool):
            raise CCDMError(f"{name} must be true or false, got {getattr(cfg, name)!r}")


def _check_choices(cfg: TrainConfig) -> None:
    choices = {"beta_schedule": BETA_SCHEDULES, "layout": LAYOUTS, "precision": PRECISIONS, "device": DEVICES,
               "decoder": DECODERS}
    for name, accepted in choices.items():
        if getattr(cfg, name) not in accepted:
            raise CCDMError(f"unknown {name} {getattr(cfg, name)!r}; accepted: {', '.join(accepted)}")
    for name in ("base", "data", "out"):
        if not isinstance(getattr(cfg, name), str):
            raise CCDMError(f"{name} must be a path string, got {getattr(cfg, name)!r}")


def merge_for_resume(saved: TrainConfig, given: Mapping[str, object]) -> TrainConfig:
    """The saved run's config with the options given again; options that would change the run are refused."""
    changed = sorted(k for k, v in given.items() if k not in RESUMABLE_CHANGES and getattr(saved, k) != v)
    if changed:
        detail = ", ".join(f"{k}={given[k]!r} (run has {getattr(saved, k)!r})" for k in changed)
        raise CCDMError(f"cannot resume with different {detail}; only these may change: "
                        f"{', '.join(sorted(RESUMABLE_CHANGES))}")
    return dataclasses.replace(saved, **{k: v for k, v in given.items() if k in RESUMABLE_CHANGES})
