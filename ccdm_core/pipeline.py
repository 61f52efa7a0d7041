"""Standalone text-to-video: an SD1.x model plus a motion module, sampled in context windows, decoded per frame."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import secrets
import time
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from einops import rearrange

from .camera import camera_infotext, resolve_camera
from .cross_frame import FrameContext, cross_frame_attention, window_anchors
from .errors import CCDMError
from .feedback import FeedbackDenoiser
from .freeinit import FreeInitSettings, freeinit_infotext, freeinit_passes
from .fusion import FusionSettings, PatchFusion
from .init_frames import (DEFAULT_STRENGTH, SOURCE_KEY, check_strength, encode_frames, img2img_sigmas,
                          noised_init)
from .inject import inject_motion
from .interpolate import check_factor
from .keyframes import Keyframe, check_keyframes, encode_keyframes, scheduled_conditioning
from .lcm import ORIGINAL_STEPS as LCM_MAX_STEPS, lcm_sigmas
from .motion import MotionModule
from .sampling import (DiscreteSchedule, EpsVideoDenoiser, SAMPLERS, ddim_sigmas, get_sampler, get_sigmas,
                       initial_noise, video_generators, video_noise_sampler)
from .schedules import make_alphas_cumprod
from .sd.sdpa import sdpa_cross_attention
from .windows import WindowedDenoiser

MAX_FRAMES = 1024  # latents are tiny; windows bound the UNet batch and the VAE decodes frame by frame
SAMPLER_LABELS = {"ddim": "DDIM", "euler": "Euler", "euler_a": "Euler a", "lcm": "LCM"}


def _check_range(name: str, value, low, high, kind=int) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int)
    if not ok or not low <= value <= high:
        raise CCDMError(f"{name} must be {'a number' if kind is float else 'an integer'} in {low}..{high}, "
                        f"got {value!r}")


@dataclasses.dataclass(frozen=True)
class VideoSettings:
    """What to generate; validated on construction, serialised by field name."""

    prompt: str
    negative_prompt: str = ""
    frames: int = 16
    fps: float = 8.0
    width: int = 256
    height: int = 256
    steps: int = 20
    cfg_scale: float = 7.5
    seed: int = -1  # -1: a random seed, reported in the result
    sampler: str = "ddim"
    context_length: int = 16
    context_overlap: int = 4
    closed_loop: bool = False
    fusion_strength: float = 0.5  # pyramid patch-matching fusion; 0 = off (bit-identical to no fusion)
    cross_frame_strength: float = 0.5  # cross-frame attention; 0 = off
    fusion_mode: str = "temporal"  # uniform (eq. 11 as printed) | temporal | keyframe
    anchor_first: bool = False  # render frame 0 with the plain text-to-image model first, then animate from it
    camera: str = "auto"  # camera-move guidance: auto (the move the prompt names) | none | zoom-in, pan-left, ...
    camera_strength: float = 1.0  # how strongly frames follow frame 0 along the camera path, 0..1 (0 = off)
    denoising_strength: float = DEFAULT_STRENGTH  # video to video: how far init frames are noised, 0..1
    freeinit_iterations: int = 1  # FreeInit sampling passes (1 = off .. 5)
    freeinit_filter: str = "butterworth"  # butterworth | gaussian | box | ideal
    freeinit_spatial: float = 0.25  # stop frequency over h, w (0 < x <= 1)
    freeinit_temporal: float = 0.25  # stop frequency over frames
    freeinit_noise: str = "fresh"  # the high band from fresh noise or the initial noise
    interpolate: int = 1  # frame interpolation when writing: 1 = off, 2..8 frames per generated frame

    def __post_init__(self):
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise CCDMError("prompt and negative_prompt must be strings")
        _check_range("frames", self.frames, 1, MAX_FRAMES)
        _check_range("fps", self.fps, 0.1, 120, float)
        for name in ("width", "height"):
            value = getattr(self, name)
            _check_range(name, value, 64, 2048)
            if value % 8:
                raise CCDMError(f"{name} {value} is not a multiple of 8; accepted: 64..2048 in steps of 8")
        _check_range("steps", self.steps, 1, 500)
        _check_range("cfg_scale", self.cfg_scale, 0, 50, float)
        _check_range("seed", self.seed, -1, 2**63 - 1)
        if self.sampler not in SAMPLERS:
            raise CCDMError(f"unknown sampler {self.sampler!r}; accepted: {', '.join(SAMPLERS)}")
        if self.sampler == "lcm" and self.steps > LCM_MAX_STEPS:
            raise CCDMError(f"steps with the LCM sampler must be an integer in 1..{LCM_MAX_STEPS} (its distillation "
                            f"grid; 4-8 recommended), got {self.steps}")
        _check_range("context_length", self.context_length, 1, MAX_FRAMES)
        _check_range("context_overlap", self.context_overlap, 0, self.context_length - 1)
        self.fusion()  # validates strengths and mode
        _check_range("camera_strength", self.camera_strength, 0, 1, float)
        self.camera_move()  # validates the choice
        check_strength(self.denoising_strength)
        self.freeinit()  # validates the FreeInit fields
        check_factor(self.interpolate)

    def fusion(self) -> FusionSettings:
        return FusionSettings(strength=self.fusion_strength, mode=self.fusion_mode,
                              cross_frame_strength=self.cross_frame_strength)

    def freeinit(self) -> FreeInitSettings:
        return FreeInitSettings(iterations=self.freeinit_iterations, filter=self.freeinit_filter,
                                spatial=self.freeinit_spatial, temporal=self.freeinit_temporal,
                                noise=self.freeinit_noise)

    def camera_move(self) -> Optional[str]:
        """The camera move this run follows (None: off, or no move named in the prompt under `auto`)."""
        move = resolve_camera(self.camera, self.prompt)
        return move if self.camera_strength > 0 and self.frames > 1 else None

    def context_label(self) -> str:
        loop = "/loop" if self.closed_loop else ""
        return f"{self.context_length}/{self.context_overlap}{loop}"


@dataclasses.dataclass
class VideoResult:
    frames: np.ndarray  # (f, h, w, 3) uint8
    latents: torch.Tensor  # (1, 4, f, h/8, w/8)
    seed: int
    infotext: str
    seconds: float


def _alphas_cumprod(model, motion: Optional[MotionModule]) -> torch.Tensor:
    """The module's training schedule when a module is used (AnimateDiff: linear betas), else the model's own."""
    if motion is not None:
        info = motion.info
        return make_alphas_cumprod(info.beta_schedule, info.beta_start, info.beta_end, model.timesteps)
    return make_alphas_cumprod("scaled_linear", model.linear_start, model.linear_end, model.timesteps)


def _sigmas(settings: VideoSettings, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    if settings.sampler == "ddim":
        return ddim_sigmas(alphas_cumprod, settings.steps)
    if settings.sampler == "lcm":
        return lcm_sigmas(alphas_cumprod, settings.steps)
    return get_sigmas(alphas_cumprod, settings.steps, "uniform")


def _sampler(name: str, alphas_cumprod: torch.Tensor) -> Callable:
    """The sampler function; LCM also gets the schedule's sigma -> timestep for its boundary scalings."""
    sampler = get_sampler(name)
    if name == "lcm":
        return functools.partial(sampler, sigma_to_t=DiscreteSchedule(alphas_cumprod).sigma_to_t)
    return sampler


def _unet_call(unet, handle):
    def call(x, t, context, num_frames):
        if handle is not None:
            handle.num_frames = num_frames
        return unet(x, t, context)
    return call


def _window_denoiser(denoiser: EpsVideoDenoiser, frame_ctx: FrameContext, keyframes):
    """Tells cross-frame attention each window's anchors, then runs the CFG denoiser on the window."""
    def call(x, sigma, window, **extra):
        frame_ctx.set_window(len(window), window_anchors(window, keyframes))
        return denoiser(x, sigma, **extra)
    return call


def _check_motion(settings: VideoSettings, motion: Optional[MotionModule]) -> None:
    if motion is not None and min(settings.context_length, settings.frames) > motion.max_frames:
        raise CCDMError(f"context_length {settings.context_length} exceeds the motion module's {motion.max_frames} "
                        f"frame positions; accepted 1..{motion.max_frames}")


def _progress(total: int, enabled: bool, callback: Optional[Callable]):
    from tqdm import tqdm

    bar = tqdm(total=total, desc="ccdm", unit="step", disable=not enabled, leave=False)

    def report(info):
        bar.update(1)
        if callback is not None:
            callback(info)
    return bar, report


def _conditioning(model, settings: VideoSettings, keyframes: Sequence[Keyframe], device, dtype):
    """cond `1 T D`, or `1 f T D` when keyframes carry prompts (interpolated between them); uncond `1 T D`."""
    schedule = {kf.frame: kf.prompt for kf in keyframes if kf.prompt}
    if schedule:
        schedule.setdefault(0, settings.prompt)
        cond = scheduled_conditioning(model.encode_prompts, settings.frames, schedule)
    else:
        cond = model.encode_prompts([settings.prompt])
    return cond.to(device, dtype), model.encode_prompts([settings.negative_prompt]).to(device, dtype)


def _anchor_first(model, settings: VideoSettings, keyframes: List[Keyframe], seed: int) -> List[Keyframe]:
    """Anchor-first: frame 0 rendered by the plain text-to-image model (same prompt, seed) becomes a keyframe."""
    if not settings.anchor_first or any(kf.frame == 0 and kf.image is not None for kf in keyframes):
        return keyframes
    still = dataclasses.replace(settings, frames=1, fusion_strength=0.0, cross_frame_strength=0.0,
                                anchor_first=False)
    latent = sample_latents(model, None, still, seed)[0, :, 0]
    prompt = next((kf.prompt for kf in keyframes if kf.frame == 0), None)
    return [Keyframe(0, latent, 1.0, prompt)] + [kf for kf in keyframes if kf.frame != 0]


def _start(settings: VideoSettings, sigmas, generators, device, init_latents: Optional[torch.Tensor]):
    """Sigmas, the unit noise, and how a pass's first sampler input is made from unit noise: noise * sigma, or
    video to video's init latents noised to the strength."""
    shape = (1, 4, settings.frames, settings.height // 8, settings.width // 8)
    noise = initial_noise(shape, generators, torch.float32, device)
    if init_latents is None:
        return sigmas, noise, lambda unit: unit * sigmas[0]
    if tuple(init_latents.shape) != shape:
        raise CCDMError(f"init latents {tuple(init_latents.shape)} do not fit frames x size {shape}")
    if settings.freeinit().enabled:
        raise CCDMError("freeinit_iterations: FreeInit re-noises a text-to-video result; with init frames "
                        "(video to video) accepted: 1")
    sigmas = img2img_sigmas(sigmas, settings.denoising_strength)
    init = init_latents.to(device)
    return sigmas, noise, lambda unit: noised_init(init, unit, sigmas, settings.denoising_strength)


@torch.no_grad()
def sample_latents(model, motion: Optional[MotionModule], settings: VideoSettings, seed: int,
                   progress: bool = False, callback: Optional[Callable] = None,
                   keyframes: Sequence[Keyframe] = (), init_latents: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The denoised latent video `1 4 f h/8 w/8` (cond and uncond are separate videos of one UNet batch).

    `init_latents` (`1 4 f h/8 w/8`, scaled): video to video, sampled from them at `settings.denoising_strength`.
    """
    # 1. Keyframes, conditioning, schedule and noise.
    _check_motion(settings, motion)
    keyframes = _anchor_first(model, settings, check_keyframes(keyframes, settings.frames), seed)
    unet = model.unet
    dtype, device = next(unet.parameters()).dtype, next(unet.parameters()).device
    cond, uncond = _conditioning(model, settings, keyframes, device, dtype)
    key_latents = encode_keyframes(model.vae.encode, keyframes, settings.width, settings.height, model.scale_factor)
    alphas_cumprod = _alphas_cumprod(model, motion)
    generators = video_generators([seed])
    sigmas, noise, first_input = _start(settings, _sigmas(settings, alphas_cumprod).to(device), generators, device,
                                        init_latents)
    if len(sigmas) == 1:  # strength 0: nothing to sample
        return first_input(noise)
    fusion = settings.fusion()
    frame_ctx = FrameContext(fusion.cross_frame_strength)
    # 2. Patches for the run (fused attention, cross-frame attention, motion module), all restored on exit.
    with contextlib.ExitStack() as stack:
        stack.enter_context(sdpa_cross_attention(unet))
        stack.enter_context(cross_frame_attention(unet, frame_ctx))
        handle = None
        if motion is not None:
            handle = stack.enter_context(inject_motion(unet, motion, min(settings.frames, settings.context_length)))
        denoiser = EpsVideoDenoiser(_unet_call(unet, handle), alphas_cumprod, settings.cfg_scale)
        windowed = WindowedDenoiser(_window_denoiser(denoiser, frame_ctx, sorted(key_latents)),
                                    settings.context_length, settings.context_overlap, settings.closed_loop,
                                    frame_args={"cond": (1, 4), "uncond": (1, 4)}, pass_window=True)
        # 3. Frame feedback: keyframe guidance and fusion on the whole clip; the sampler continues from it.
        fusion_module = PatchFusion.from_extras(motion.extras) if motion is not None else None
        feedback = FeedbackDenoiser(windowed, sigmas, fusion, key_latents,
                                    {kf.frame: kf.strength for kf in keyframes}, fusion_module,
                                    camera=settings.camera_move(), camera_strength=settings.camera_strength)
        # 4. Sampling; FreeInit repeats it from re-initialised noise (every pass re-applies the guidance).
        freeinit = settings.freeinit()
        bar, report = _progress((len(sigmas) - 1) * freeinit.iterations, progress, callback)
        sampler = _sampler(settings.sampler, alphas_cumprod)

        def sample_pass(unit_noise, index):
            x = first_input(unit_noise)
            return sampler(feedback, x, sigmas, extra_args={"cond": cond, "uncond": uncond}, callback=report,
                           noise_sampler=video_noise_sampler(x, generators))

        with bar:
            return freeinit_passes(sample_pass, noise, float(sigmas[0]), freeinit,
                                   lambda index: initial_noise(noise.shape, generators, torch.float32, device))


@torch.no_grad()
def decode_frames(model, latents: torch.Tensor) -> np.ndarray:
    """VAE-decode one frame at a time (bounded memory); uint8 `(f, h, w, 3)`."""
    vae = model.vae
    dtype = next(vae.parameters()).dtype
    frames = []
    for z in rearrange(latents, "b c f h w -> (b f) c h w"):
        image = vae.decode((z[None] / model.scale_factor).to(dtype)).float().clamp(-1, 1)
        frames.append(rearrange((image[0] + 1) * 127.5, "c h w -> h w c").round().byte().cpu().numpy())
    return np.stack(frames)


def encode_source(model, frames: np.ndarray) -> torch.Tensor:
    """Video to video's init latents: each source frame VAE-encoded with the model's VAE (scaled)."""
    vae = model.vae
    dtype, device = next(vae.parameters()).dtype, next(vae.parameters()).device
    return encode_frames(lambda x: vae.encode(x.to(device, dtype)), frames, model.scale_factor)


def generate(model, motion: Optional[MotionModule], settings: VideoSettings, progress: bool = False,
             callback: Optional[Callable] = None, motion_name: str = "",
             keyframes: Sequence[Keyframe] = (), source_frames: Optional[np.ndarray] = None,
             source_label: Optional[str] = None) -> VideoResult:
    """Text to video with the standalone engine; video to video when `source_frames` (f h w 3 uint8) are given."""
    start = time.perf_counter()
    seed = settings.seed if settings.seed >= 0 else secrets.randbelow(2**32)
    init = None
    if source_frames is not None:
        if source_frames.shape[:3] != (settings.frames, settings.height, settings.width):
            raise CCDMError(f"source frames {source_frames.shape[:3]} do not match frames x height x width "
                            f"{(settings.frames, settings.height, settings.width)}")
        init = encode_source(model, source_frames)
    latents = sample_latents(model, motion, settings, seed, progress, callback, keyframes, init)
    frames = decode_frames(model, latents)
    info = build_video_infotext(settings, seed, model, motion, motion_name, keyframes,
                                source_label if source_frames is not None else None)
    return VideoResult(frames, latents, seed, info, time.perf_counter() - start)


def build_video_infotext(settings: VideoSettings, seed: int, model, motion, motion_name: str = "",
                         keyframes: Sequence[Keyframe] = (), source_label: Optional[str] = None) -> str:
    from .infotext import build_infotext
    from .keyframes import format_value_schedule

    model_hash = getattr(model, "sha256", None)
    motion_label = None
    if motion is not None:
        motion_label = f"{motion_name or motion.info.format} [{motion.info.shorthash or 'unsaved'}]"
    params = {
        "Steps": settings.steps, "Sampler": SAMPLER_LABELS[settings.sampler], "CFG scale": settings.cfg_scale,
        "Seed": seed, "Size": f"{settings.width}x{settings.height}",
        "Model hash": model_hash[:10] if model_hash else None, "Model": getattr(model, "source", None),
        "CCDM motion module": motion_label, "CCDM frames": settings.frames, "CCDM fps": settings.fps,
        "CCDM context": settings.context_label(),
        "CCDM fusion": f"{settings.fusion_strength:g}/{settings.cross_frame_strength:g}/{settings.fusion_mode}",
        "CCDM anchor first": "true" if settings.anchor_first else None,
        **camera_infotext(settings.camera_move(), settings.camera_strength),
        "CCDM keyframes": format_value_schedule({kf.frame: kf.strength for kf in keyframes if kf.image is not None})
        or None,
        "Denoising strength": settings.denoising_strength if source_label else None,
        SOURCE_KEY: source_label,
        **freeinit_infotext(settings.freeinit()),
        "CCDM interpolate": settings.interpolate if settings.interpolate > 1 else None,
    }
    return build_infotext(settings.prompt, settings.negative_prompt, params)
