"""CCDM runs inside the WebUI's processing: module selection and cache, the wrapped `p.sample`, clip writing.

Both entry points end here: the always-on script (txt2img/img2img hooks) and the txt2vid tab / API route, which
build a `StableDiffusionProcessingTxt2Img` and go through `process_images`, so the WebUI's checkpoint, VAE,
LoRAs, embeddings, samplers, progress, preview, Interrupt and Skip all apply.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import CCDMError
from ..motion import MotionModule
from ..motion_io import load_motion_module
from . import env
from .attention_dispatch import backend_for
from .controlnet import controlnet_frames, controlnet_scripts
from .discovery import MotionEntry, list_motion_modules, no_module_message, resolve_motion_module
from ..motion_lora import lora_label, merged_motion_loras
from .freeinit_passes import check_freeinit, sample_with_freeinit
from .module_notes import module_notes
from .motion_loras import KEY_CAMERA_LORA, KEY_TAGS, camera_with_loras, prepare_loras, prepare_prompt_loras
from .guidance import (EPS, UNSUPPORTED, X0, Guidance, Prediction, PromptSchedule, active_guidance,
                       build_guidance, build_prompt_schedule, with_anchor)
from .outputs import ClipFiles, dated_folder, frames_from_unit_tensors, write_clip
from .patches import check_run, restore_leftovers, video_patches
from .reporting import report_for_clip
from .settings import CCDMSettings, CCDMSettingsError, Txt2VidRequest
from .video_source import VideoSource, init_images, keep_audio, read_run_source

_AND = re.compile(r"\bAND\b")
_EXTRA_NETWORK = re.compile(r"<[^<>:]+:[^<>]*>")  # <lora:name:1> and the like
_lock = threading.Lock()
_entries: Optional[List[MotionEntry]] = None
_loaded: Dict[str, MotionModule] = {}  # sha256 -> module on the WebUI's device (kept per the settings option)
_formats: Dict[str, Tuple[str, Optional[str]]] = {}  # sha256 -> (format, "sd1" | "sdxl"), for the listing


# ---------------------------------------------------------------- motion modules

def list_modules(refresh: bool = False) -> List[MotionEntry]:
    """The motion modules found (scanned once, again on refresh)."""
    global _entries
    with _lock:
        if _entries is None or refresh:
            _entries = list_motion_modules(env.motion_folders(), env.webui_sha256)
        return list(_entries)


def missing_message() -> str:
    return no_module_message(env.motion_folders())


def select_module(query: str) -> MotionEntry:
    """The entry the settings name (empty: the default module of the settings section, else the first)."""
    query = (query or "").strip() or str(env.opt("ccdm_default_motion_module") or "")
    entries = list_modules()
    try:
        return resolve_motion_module(entries, query, env.motion_folders())
    except CCDMSettingsError:
        entries = list_modules(refresh=True)  # a file may have been added since the last scan
        return resolve_motion_module(entries, query, env.motion_folders())


def load_module(entry: MotionEntry, device, dtype) -> MotionModule:
    """The module for a run, from the cache when the same file (sha256) was loaded before."""
    key = entry.sha256 or entry.path
    module = _loaded.get(key)
    if module is None:
        release_modules(force=True)  # one module in memory at a time
        try:
            module = load_motion_module(entry.path)
        except CCDMError as err:
            raise CCDMSettingsError("motion_module", str(err)) from None
        _formats[key] = (module.info.format, module.info.base)
    module.to(device=device, dtype=dtype)
    _loaded[key] = module
    return module


def _format_and_base(entry: MotionEntry) -> Tuple[str, Optional[str]]:
    key = entry.sha256 or entry.path
    if key not in _formats:
        try:
            info = load_motion_module(entry.path).info
            _formats[key] = (info.format, info.base)
        except CCDMError as err:
            _formats[key] = (f"unreadable: {err}", None)
    return _formats[key]


def module_format(entry: MotionEntry) -> str:
    """The module's format (ccdm, animatediff-v1/v2/v3, animatelcm, animatediff-sdxl, hotshot-xl); loads the file
    once on the CPU when not yet known."""
    return _format_and_base(entry)[0]


def module_family(entry: MotionEntry) -> Optional[str]:
    """"sd1" or "sdxl": the model family the module is made for (None: unreadable)."""
    return _format_and_base(entry)[1]


def release_modules(force: bool = False) -> None:
    """Drop cached modules unless the settings keep them in memory."""
    if force or not env.opt("ccdm_keep_module_in_memory"):
        if _loaded:
            _loaded.clear()
            from modules import devices

            devices.torch_gc()


# ---------------------------------------------------------------- one run

@dataclasses.dataclass
class VideoRun:
    """Per-run state: the settings, the chosen module, a deferred error, and what was written."""

    settings: CCDMSettings
    is_img2img: bool = False
    entry: Optional[MotionEntry] = None
    module: Optional[MotionModule] = None
    error: Optional[Exception] = None
    incomplete: List[bool] = dataclasses.field(default_factory=list)
    clips: List[ClipFiles] = dataclasses.field(default_factory=list)
    guidance: Optional[Guidance] = None  # fusion, keyframe latents, camera; current only while p.sample runs
    prompts: Optional[PromptSchedule] = None  # keyframe prompts' conditioning, encoded once by the WebUI's model
    source: Optional[VideoSource] = None  # video to video: the source read at the run's size (its frames are p's init)
    reports: List[Optional[dict]] = dataclasses.field(default_factory=list)  # per clip, None when turned off
    loras: list = dataclasses.field(default_factory=list)  # (MotionLora, strength), merged while p.sample runs

    def fail(self, err: Exception) -> None:
        if self.error is None:
            self.error = err if isinstance(err, CCDMSettingsError) else CCDMSettingsError("ccdm", str(err))


def prepare(run: VideoRun, p) -> None:
    """Select and load the module and check it against the loaded checkpoint; record any error on the run."""
    try:
        _check_prompts(p)
        from modules import devices

        run.entry = select_module(run.settings.motion_module)
        unet = p.sd_model.model.diffusion_model
        run.module = load_module(run.entry, devices.device, next(unet.parameters()).dtype)
        check_run(p.sd_model, run.module, run.settings)
        check_freeinit(p, run)
        module_notes(p, run.module, run.settings)
        named = prepare_loras(run.settings, run.module)
        tagged = prepare_prompt_loras(p, run.settings, run.module)
        run.loras = named + tagged
        prompt = first_prompt(p)  # names the camera move under `auto`: guidance and infotext read the same one
        run.settings, camera_lora = camera_with_loras(run.settings, run.loras, prompt)
        run.guidance = _guidance(p, run, prompt)
        run.prompts = _prompt_schedule(p, run)
        p.extra_generation_params.update(run.settings.infotext_params(run.entry.label, prompt))
        if run.source is not None:
            p.extra_generation_params.update(run.settings.source_params(run.source.clip.sha256))
        if named:
            p.extra_generation_params["CCDM motion LoRAs"] = lora_label(named)
        if tagged:
            p.extra_generation_params[KEY_TAGS] = lora_label(tagged)
        if camera_lora:
            p.extra_generation_params[KEY_CAMERA_LORA] = camera_lora
    except CCDMError as err:
        run.fail(err)
    except Exception as err:  # the WebUI swallows errors in process(): keep it for p.sample to raise as it is
        run.error = err


def first_prompt(p) -> str:
    """The run's first prompt: `p.all_prompts[0]` (WebUI 1.6.0 fills it, styles applied, before the scripts'
    `process`), else `p.prompt` (a string or a list). One camera move serves every video of the run."""
    prompts = getattr(p, "all_prompts", None) or getattr(p, "prompt", None) or ""
    if isinstance(prompts, (list, tuple)):
        prompts = prompts[0] if prompts else ""
    return prompts if isinstance(prompts, str) else ""


def _guidance(p, run: VideoRun, prompt: str = "") -> Guidance:
    """Keyframe images VAE-encoded once with the WebUI's first stage; the fusion module from the module's extras;
    the camera move `prompt` names under `auto`."""
    import torch
    from modules import devices

    sd_model = p.sd_model
    vae_dtype = getattr(devices, "dtype_vae", torch.float32)

    def vae_encode(pixels):
        latent = sd_model.encode_first_stage(pixels.to(devices.device, dtype=vae_dtype))
        return sd_model.get_first_stage_encoding(latent).float()

    return build_guidance(run.settings, vae_encode, int(p.width), int(p.height),
                          getattr(run.module, "extras", None), devices.device, prompt)


def _prompt_schedule(p, run: VideoRun) -> Optional[PromptSchedule]:
    """Keyframe prompts encoded once with the WebUI's model and prompt syntax (`prompt_parser`, so emphasis,
    embeddings and prompt editing work); extra-network tags are dropped (the main prompt's networks apply)."""
    texts = sorted({kf.prompt for kf in run.settings.keyframes if kf.prompt and kf.prompt.strip()})
    if not texts:
        return None
    import torch
    from modules import devices, prompt_parser

    plain = [_EXTRA_NETWORK.sub("", text) for text in texts]
    if plain != texts:
        print("CCDM: extra networks (<...>) in keyframe prompts are ignored; those of the main prompt apply")
    with torch.no_grad(), devices.autocast():
        schedules = prompt_parser.get_learned_conditioning(
            p.sd_model, prompt_parser.SdConditioning(plain, width=p.width, height=p.height), p.steps)
    by_text = dict(zip(texts, schedules))

    def cond_at(text: str, step: int):
        batch = prompt_parser.reconstruct_cond_batch([by_text[text]], step)
        if isinstance(batch, Mapping):  # SDXL: {"crossattn": [1, T, D], "vector": [1, V]}
            return {key: value[0] for key, value in batch.items()}
        return batch[0]

    empty = getattr(p.sd_model, "cond_stage_model_empty_prompt", None)
    empty = empty.reshape(-1, empty.shape[-1]) if isinstance(empty, torch.Tensor) else None
    return build_prompt_schedule(run.settings.keyframes, run.settings.frames, cond_at, empty)


def _check_prompts(p) -> None:
    prompts = getattr(p, "all_prompts", None) or p.prompt
    prompts = prompts if isinstance(prompts, list) else [prompts]
    if any(isinstance(text, str) and _AND.search(text) for text in prompts):
        raise CCDMSettingsError("prompt", "composable prompts (AND) are not supported for video; remove AND")


def install_sample_wrapper(p, run: VideoRun) -> None:
    """Replace `p.sample` on this processing object: patches live exactly as long as each sampling call."""
    original = p.sample

    def sample(*args, **kwargs):
        if run.error is not None:
            raise run.error  # before anything is touched: nothing sampled, nothing written
        if run.module is None:
            raise CCDMSettingsError("motion_module", "no motion module was prepared for this run")
        from modules import devices, shared

        dtype = next(run.module.parameters()).dtype
        _, attention_fn, note = backend_for(env.optimizer_name(), devices.device, dtype)
        if note:
            print(f"CCDM: {note}")
        guidance = _anchored(run.guidance, _anchor_first(p, run, original, args, kwargs))
        keyframes = guidance.keyframes if guidance is not None else []
        # ControlNet's per-frame hints sit between the windowed forward and ControlNet's own (entered first);
        # its frame tagger is the outermost forward.
        with merged_motion_loras(run.module, run.loras), controlnet_frames(p, run) as control, \
                video_patches(p.sd_model, run.module, run.settings, attention_fn, keyframes):
            with control.tag_frames(), _fresh_sampler(p, run), _first_frame_keyframe(p, run), \
                    active_guidance(guidance, run.prompts, lambda: sampler_prediction(p)):
                result = sample_with_freeinit(p, run, lambda: original(*args, **kwargs))
        run.incomplete.append(bool(shared.state.interrupted or shared.state.skipped))
        return result

    p.sample = sample


TIMESTEP_SAMPLERS = ("DDIM", "PLMS", "UniPC")  # WebUI 1.6.0's timestep samplers: their after-CFG value is eps


def sampler_prediction(p) -> Prediction:
    """What the sampler now sampling hands to `on_cfg_after_cfg`, read from its CFG denoiser (WebUI 1.6.0:
    `CFGDenoiserTimesteps` -> eps, converted with its `alphas`; a denoiser whose `get_pred_x0` is the base
    class's identity -> x0, the k-diffusion samplers). Asked at every step: the hires pass may use another sampler."""
    sampler = getattr(p, "sampler", None)
    cfg = getattr(sampler, "model_wrap_cfg", None)
    name = getattr(getattr(sampler, "config", None), "name", None) or getattr(p, "sampler_name", "?")
    if cfg is None:
        return _prediction_by_name(p, name)
    from modules import sd_samplers_cfg_denoiser

    timesteps = _timesteps_denoiser()
    if timesteps is not None and isinstance(cfg, timesteps):
        mask = getattr(cfg, "mask", None)  # img2img: the init latent where the mask is 1
        init_latent = getattr(cfg, "init_latent", None) if mask is not None else None
        return Prediction(EPS, cfg.alphas, mask=mask if init_latent is not None else None, init_latent=init_latent)
    if type(cfg).get_pred_x0 is sd_samplers_cfg_denoiser.CFGDenoiser.get_pred_x0:
        return Prediction(X0)
    return Prediction(UNSUPPORTED, why=f"sampler {name} ({type(cfg).__name__}) hands over neither the clean latent "
                      "(k-diffusion) nor a noise prediction of a DDIM/PLMS/UniPC denoiser")


def _timesteps_denoiser():
    try:
        from modules.sd_samplers_timesteps import CFGDenoiserTimesteps
    except (ImportError, AttributeError):
        return None
    return CFGDenoiserTimesteps


def _prediction_by_name(p, name: str) -> Prediction:
    """No CFG denoiser to look at: the timestep samplers by name (eps with the model's alphas), else x0."""
    if name in TIMESTEP_SAMPLERS or name.lower() in {n.lower() for n in TIMESTEP_SAMPLERS}:
        return Prediction(EPS, p.sd_model.alphas_cumprod)
    return Prediction(X0)


# ---------------------------------------------------------------- anchor-first

SAMPLE_ARGS = ("conditioning", "unconditional_conditioning", "seeds", "subseeds", "subseed_strength", "prompts")


def _anchor_first(p, run: VideoRun, original, args, kwargs):
    """Anchor-first (as the standalone pipeline): frame 0 rendered by the plain text-to-image model (same prompt,
    seed, sampler, steps, CFG; one image; nothing patched) before the video; its final latent `c h w`, or None."""
    if not run.settings.anchor_first:
        return None
    if run.is_img2img:
        print("CCDM: anchor-first is skipped in img2img: the init image is already the first frame")
        return None
    if run.guidance is not None and 0 in run.guidance.key_latents:
        print("CCDM: anchor-first is skipped: a keyframe image is already at frame 0")
        return None
    call = {**dict(zip(SAMPLE_ARGS, args)), **kwargs}
    with _one_image(p, call.get("seeds") or p.seeds, call.get("subseeds") or getattr(p, "subseeds", None)), \
            controlnet_frames(p, run, frames=[0]):  # only frame 0's keyframe controls for the one image
        latent = original(**_first_item(call))
    return latent[0]


def _first_item(call: dict) -> dict:
    """p.sample's arguments for the batch's first item only."""
    from modules import prompt_parser

    out = dict(call)
    cond = call.get("conditioning")
    if hasattr(cond, "batch"):
        out["conditioning"] = prompt_parser.MulticondLearnedConditioning(shape=(1,), batch=cond.batch[:1])
    for name in ("unconditional_conditioning", "seeds", "subseeds", "prompts"):
        if isinstance(call.get(name), (list, tuple)):
            out[name] = call[name][:1]
    return out


@contextlib.contextmanager
def _one_image(p, seeds, subseeds):
    """p set up for one image (no hires pass) with the batch's first seed, on a noise generator of its own, so the
    video's generator is left as it was; everything restored after."""
    from modules import rng

    names = ("batch_size", "iteration", "rng", "sampler", "enable_hr")
    saved = {name: getattr(p, name) for name in names if hasattr(p, name)}
    p.rng = rng.ImageRNG(p.rng.shape, list(seeds[:1]), subseeds=list(subseeds[:1]) if subseeds else None,
                         subseed_strength=getattr(p, "subseed_strength", 0.0),
                         seed_resize_from_h=getattr(p, "seed_resize_from_h", 0),
                         seed_resize_from_w=getattr(p, "seed_resize_from_w", 0))
    p.iteration = getattr(p, "iteration", 0) * p.batch_size  # p.all_seeds[iteration * batch_size] is frame 0
    p.batch_size = 1
    if "enable_hr" in saved:
        p.enable_hr = False
    try:
        yield
    finally:
        for name in names:
            if name in saved:
                setattr(p, name, saved[name])
            elif hasattr(p, name):
                delattr(p, name)


def _anchored(guidance: Optional[Guidance], latent) -> Optional[Guidance]:
    if latent is None or guidance is None:
        return guidance
    return with_anchor(guidance, latent)


@contextlib.contextmanager
def _fresh_sampler(p, run: VideoRun):
    """img2img builds its sampler in `init`, before the schedule swap: build it again inside the swap."""
    previous = getattr(p, "sampler", None)
    if previous is None or not run.is_img2img:
        yield
        return
    from modules import sd_samplers

    p.sampler = sd_samplers.create_sampler(p.sampler_name, p.sd_model)
    try:
        yield
    finally:
        p.sampler = previous


@contextlib.contextmanager
def _first_frame_keyframe(p, run: VideoRun):
    """img2img: the init image is the first frame of each video (frame 0 masked to the init latent); with a source
    video every frame has its own init, so nothing is pinned."""
    init_latent = getattr(p, "init_latent", None) if run.is_img2img and run.source is None else None
    if init_latent is None:
        yield
        return
    import torch

    saved = (p.mask, p.nmask)
    keep = torch.zeros_like(init_latent[:, :1]).expand_as(init_latent).clone()
    if p.mask is not None:
        keep[:] = p.mask.to(keep)  # the user's inpainting mask applies to the other frames
    keep[0] = 1.0
    p.mask, p.nmask = keep.to(init_latent.dtype), (1.0 - keep).to(init_latent.dtype)
    try:
        yield
    finally:
        p.mask, p.nmask = saved


# ---------------------------------------------------------------- writing clips

def write_clips(p, processed, run: VideoRun, folder: Path) -> List[ClipFiles]:
    """One clip per video from the processed images (frames are `p.batch_size` consecutive images)."""
    from modules import shared

    frames = run.settings.frames
    first = getattr(processed, "index_of_first_image", 0)
    images = processed.images[first:]
    infotexts = list(getattr(processed, "infotexts", []) or [])[first:]
    save_incomplete = bool(getattr(shared.opts, "save_incomplete_images", False))
    for n in range(len(images) // frames):
        if n < len(run.incomplete) and run.incomplete[n] and not save_incomplete:
            continue
        clip = frames_from_unit_tensors(images[n * frames:(n + 1) * frames])
        info = infotexts[n * frames] if n * frames < len(infotexts) else processed.info
        seed = p.all_seeds[n * frames] if getattr(p, "all_seeds", None) else processed.seed
        run.clips.append(write_clip(clip, folder, seed, run.settings.formats, run.settings.fps, info,
                                    bool(env.opt("ccdm_save_frames")), run.settings.interpolate,
                                    run.settings.closed_loop))
        run.reports.append(report_for_clip(clip, run.settings.fps, run.clips[-1]))
    keep_audio(run.clips, run.settings, run.source)
    return run.clips


def clip_folder(p=None) -> Path:
    """The txt2vid folder (tab, API), or the tab's own output folder for the always-on script."""
    root = env.opt("ccdm_outdir") if p is None else (getattr(p, "outpath_samples", None) or env.opt("ccdm_outdir"))
    return dated_folder(root)


# ---------------------------------------------------------------- the txt2vid tab and API route

@dataclasses.dataclass
class Txt2VidResult:
    clips: List[ClipFiles]
    images: list  # PIL frames of the first clip
    info: str
    seed: int
    interrupted: bool
    report: Optional[dict] = None  # the first clip's consistency report


def _processing(request: Txt2VidRequest, settings: CCDMSettings, source: Optional[VideoSource]):
    """txt2img for text to video; img2img with one init image per frame for video to video (at strength 1 the
    init is ignored, so txt2img again: the source then drives ControlNet units only)."""
    from modules import processing, shared

    common = dict(sd_model=shared.sd_model, outpath_samples=str(clip_folder()), outpath_grids=str(clip_folder()),
                  prompt=request.prompt, negative_prompt=request.negative_prompt, seed=request.seed,
                  sampler_name=request.sampler_name, batch_size=settings.frames, n_iter=1, steps=request.steps,
                  cfg_scale=request.cfg_scale, width=request.width, height=request.height,
                  do_not_save_samples=True, do_not_save_grid=True)
    if source is not None and settings.denoising_strength < 1.0:
        return processing.StableDiffusionProcessingImg2Img(init_images=init_images(source), resize_mode=0,
                                                           denoising_strength=settings.denoising_strength, **common)
    p = processing.StableDiffusionProcessingTxt2Img(**common)
    p.denoising_strength = None  # no hires pass: keeps "Denoising strength" out of the infotext, as txt2img does
    return p


def run_txt2vid(request: Txt2VidRequest, upload: Any = None) -> Txt2VidResult:
    """Text (or video, from `request.video.source_video` or an uploaded file) to video through the WebUI's
    processing (the caller holds the WebUI's queue lock)."""
    from modules import processing

    restore_leftovers()
    # 1. Check the request against the WebUI: sampler, module, checkpoint; read the source video.
    if request.sampler_name not in env.all_sampler_names():
        raise CCDMSettingsError("sampler_name", f"unknown sampler {request.sampler_name!r}; accepted: "
                                f"{', '.join(env.sampler_names())}")
    settings, source = read_run_source(request.video, request.width, request.height, upload)
    with contextlib.closing(source) if source is not None else contextlib.nullcontext():
        return _run_video(request, settings, source, processing)


def _run_video(request: Txt2VidRequest, settings: CCDMSettings, source: Optional[VideoSource],
               processing) -> Txt2VidResult:
    p = _processing(request, settings, source)
    run = VideoRun(settings, is_img2img=hasattr(p, "init_images"), source=source)
    with contextlib.closing(p):
        prepare(run, p)
        if run.error is not None:
            raise run.error
        # 2. Sample and decode through the WebUI; the wrapped p.sample holds the patches.
        install_sample_wrapper(p, run)
        try:
            # the route's p has no scripts: ControlNet's alone, put back after
            with controlnet_scripts(p, settings, run.is_img2img):
                processed = processing.process_images(p)
        finally:
            release_modules()
        # 3. Write the clip.
        clips = write_clips(p, processed, run, clip_folder())
    interrupted = bool(run.incomplete and run.incomplete[0])
    return Txt2VidResult(clips, list(processed.images[:settings.frames]), processed.info, processed.seed,
                         interrupted, run.reports[0] if run.reports else None)
