"""The frozen base model, the trainable parts (motion module + extra modules) and the run's UNet patches."""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Callable, Dict, Iterator, Mapping, Optional

import torch
from einops import rearrange, repeat
from torch import nn
from torch.utils.checkpoint import checkpoint

from ccdm_core.errors import CCDMError
from ccdm_core.inject import inject_motion
from ccdm_core.motion import MotionModule
from ccdm_core.motion_io import load_motion_module, save_motion_module
from ccdm_core.patching import current_forward, patched_forwards
from ccdm_core.sd.loader import SDModel, build_default_model, load_sd_checkpoint
from ccdm_core.sd.sdpa import sdpa_cross_attention
from ccdm_core.unet_slots import check_fit, new_motion_module

from .config import TrainConfig
from .fusion import Fuse, training_fusion
from .losses import pin_keyframes, predicted_x0

DEFAULT_BASE = "default"
FUSION_PREFIX = "fusion."  # the engine saves and loads `fusion.*` tensors beside a motion module


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for the run, or None for fp32: mixed precision on GPUs only."""
    if device.type != "cuda":
        if precision in ("fp16", "bf16"):
            raise CCDMError(f"--precision {precision} needs a CUDA GPU; on the CPU accepted: auto, fp32")
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def load_base(base: str, device: torch.device, weight_dtype: Optional[torch.dtype]) -> SDModel:
    """The base SD1.x model, frozen: UNet and text encoder in the run's dtype, VAE in fp32 (encodes the data)."""
    if base == DEFAULT_BASE:
        model = build_default_model(0)
    elif not Path(base).is_file():
        raise CCDMError(f"--base {base!r}: no such file; accepted: an SD1.x .safetensors/.ckpt or 'default'")
    else:
        model = load_sd_checkpoint(base, "cpu", torch.float32)
    for part in (model.unet, model.vae, model.text_encoder):
        part.requires_grad_(False).eval()
    model.unet.to(device=device, dtype=weight_dtype or torch.float32)
    model.text_encoder.to(device=device, dtype=weight_dtype or torch.float32)
    model.vae.to(device=device, dtype=torch.float32)
    return model


def base_id(model: SDModel) -> str:
    """The base's sha256, or a name for the built-in model (which has no file)."""
    return model.sha256 or "builtin-default-0"


class Trainables(nn.Module):
    """Everything training updates: the motion module plus extra modules (e.g. the fusion projections).

    An extra named `fusion` is saved beside the module as `fusion.<param>`, any other as `fusion.<name>.<param>`
    (the engine keeps `fusion.*` tensors as the module's extras and builds its `PatchFusion` from them). `fuse`
    is the keyframe term's fusion, `fuse(x0_hat, key_mask, t)`. Fusion tensors of an --init file that no extra
    claims pass through unchanged.
    """

    def __init__(self, motion: MotionModule, extras: Optional[Mapping[str, nn.Module]] = None,
                 fuse: Optional[Fuse] = None):
        super().__init__()
        self.motion = motion
        self.extras = nn.ModuleDict(dict(extras or {}))
        self.frozen_extras: Dict[str, torch.Tensor] = {}
        self._fuse = fuse  # a plain callable (it may close over an extra module), not a submodule

    @staticmethod
    def prefix(name: str) -> str:
        return FUSION_PREFIX if name == "fusion" else f"{FUSION_PREFIX}{name}."

    def fuse(self, x0_hat: torch.Tensor, key_mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The keyframe term's fusion of the pinned x0 prediction; the identity without a fusion module."""
        return self._fuse(x0_hat, key_mask, t) if self._fuse is not None else x0_hat

    def extra_tensors(self) -> Dict[str, torch.Tensor]:
        tensors = dict(self.frozen_extras)
        for name, module in self.extras.items():
            tensors.update({self.prefix(name) + k: v.detach().cpu() for k, v in module.state_dict().items()})
        return tensors

    def load_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Load a motion file's tensors strictly: motion keys into the module, each extra's own keys into it."""
        pool = {k: v for k, v in tensors.items() if k.startswith(FUSION_PREFIX)}
        self.motion.load_state_dict({k: v for k, v in tensors.items() if k not in pool}, strict=True)
        for name, module in self.extras.items():
            wanted = {self.prefix(name) + k: k for k in module.state_dict()}
            if not wanted.keys() & pool.keys():
                continue  # a file without this extra: it keeps its initial weights
            missing = sorted(wanted.keys() - pool.keys())
            if missing:
                raise CCDMError(f"the file lacks {len(missing)} weights of the extra module {name!r} "
                                f"(e.g. {missing[0]})")
            module.load_state_dict({k: pool.pop(key) for key, k in wanted.items()}, strict=True)
        self.frozen_extras = {k: v.detach().cpu() for k, v in sorted(pool.items())}

    def save(self, path: Path, metadata: Optional[Dict[str, object]] = None) -> str:
        """Write a motion file (the engine's format, fusion tensors included); return its sha256."""
        self.motion.extras = self.extra_tensors()
        return save_motion_module(self.motion, path, metadata)


def _initial_motion(cfg: TrainConfig, model: SDModel) -> MotionModule:
    """The --init module (checked against the base), or a fresh one seeded by the run (the identity)."""
    if not cfg.init:
        with torch.random.fork_rng(devices=[]):  # the run's seed decides the initial weights; global RNG untouched
            torch.manual_seed(cfg.seed)
            return new_motion_module(model.unet, cfg.layout, cfg.max_frames)
    motion = load_motion_module(cfg.init)
    check_fit(model.unet, motion)
    if cfg.frames > motion.max_frames:
        raise CCDMError(f"frames {cfg.frames} exceed the --init module's {motion.max_frames} positions; "
                        f"accepted 1..{motion.max_frames}")
    return motion


def build_trainables(cfg: TrainConfig, model: SDModel, device: torch.device,
                     extras: Optional[Mapping[str, nn.Module]] = None, fuse: Optional[Fuse] = None) -> Trainables:
    """The motion module carrying the run's schedule, plus the fusion module with --train-fusion (or `extras`)."""
    motion = _initial_motion(cfg, model)
    init_extras = dict(motion.extras)
    if cfg.train_fusion and extras is None:
        extras, fuse = training_fusion(cfg, init_extras)
    motion.info = dataclasses.replace(
        motion.info, format="ccdm", beta_schedule=cfg.beta_schedule, beta_start=cfg.beta_start,
        beta_end=cfg.beta_end, train_frames=cfg.frames, sha256=None,
        metadata={"ccdm.base_model_sha256": model.sha256 or "", "ccdm.train_config": cfg.to_json()})
    trainables = Trainables(motion, extras, fuse)
    if init_extras:
        trainables.load_tensors({**motion.state_dict(), **init_extras})
    trainables.to(device=device, dtype=torch.float32).requires_grad_(True).train()
    return trainables


class MotionTrainer(nn.Module):
    """What DDP wraps: the trainables are its only parameters; the frozen UNet is held but not registered."""

    def __init__(self, trainables: Trainables, unet: nn.Module):
        super().__init__()
        self.trainables = trainables
        object.__setattr__(self, "unet", unet)  # not a submodule: DDP neither broadcasts nor reduces it
        self.handle = None  # set by training_patches for the segment

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor, x0: Optional[torch.Tensor] = None,
                key_mask: Optional[torch.Tensor] = None, alphas_t: Optional[torch.Tensor] = None):
        """x_t `b c f h w`, t `b`, context `b n d` -> (eps_hat `b c f h w` fp32, fused pinned x0_hat or None)."""
        videos, _, frames = x_t.shape[:3]
        self.handle.num_frames = frames
        eps = self.unet(rearrange(x_t, "b c f h w -> (b f) c h w"), repeat(t, "b -> (b f)", f=frames),
                        repeat(context, "b n d -> (b f) n d", f=frames))
        eps_hat = rearrange(eps.float(), "(b f) c h w -> b c f h w", b=videos)
        if key_mask is None:
            return eps_hat, None
        x0_hat = pin_keyframes(predicted_x0(x_t, eps_hat, alphas_t), x0, key_mask)
        return eps_hat, self.trainables.fuse(x0_hat, key_mask, t)


def _checkpointed(run: Callable) -> Callable:
    def forward(*args):
        if torch.is_grad_enabled():
            return checkpoint(run, *args, use_reentrant=False)
        return run(*args)
    return forward


def gradient_checkpointing(unet: nn.Module):
    """Context manager: each UNet block (temporal layers included) is recomputed in the backward pass instead of
    keeping its activations; an instance-level forward per block, restored to exactly what was there."""
    blocks = [*unet.input_blocks, unet.middle_block, *unet.output_blocks]
    return patched_forwards(blocks, lambda block, previous: _checkpointed(current_forward(block, previous)))


@contextlib.contextmanager
def training_patches(trainer: MotionTrainer, frames: int, checkpointing: bool) -> Iterator[None]:
    """For a stretch of training steps: fused attention, the motion module injected, optional checkpointing."""
    unet = trainer.unet
    with contextlib.ExitStack() as stack:
        stack.enter_context(sdpa_cross_attention(unet))
        trainer.handle = stack.enter_context(inject_motion(unet, trainer.trainables.motion, frames))
        if checkpointing:
            stack.enter_context(gradient_checkpointing(unet))
        try:
            yield
        finally:
            trainer.handle = None
