"""Everything a CCDM run changes in the WebUI's model, as one context manager that restores by identity.

Works on any object shaped like the WebUI's `sd_model` (`.model.diffusion_model` an ldm UNet, `.alphas_cumprod`),
so it is tested with real tiny ldm UNets outside the WebUI.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator, List, Sequence

from ..attention import AttentionFn, use_attention_backend
from ..cross_frame import FrameContext, cross_frame_attention
from ..inject import MotionHandle, inject_motion
from ..errors import CCDMError
from ..motion import MotionModule, check_base
from ..schedules import make_alphas_cumprod, swap_alphas_cumprod
from ..unet_slots import check_fit
from .settings import CCDMSettings, CCDMSettingsError
from .video_unet import windowed_unet_forward

_ACTIVE: List[contextlib.ExitStack] = []  # runs whose patches are in place (normally none between runs)
_LOCK = threading.Lock()


def model_base(sd_model) -> str:
    """"sdxl" or "sd1": the family of the WebUI's loaded checkpoint."""
    return "sdxl" if getattr(sd_model, "is_sdxl", False) else "sd1"


def check_model(sd_model, module: MotionModule) -> None:
    """Refuse checkpoints that motion modules do not fit (SD2.x, v-prediction) and a module made for the other
    family (an SDXL module on SD1.x, an SD1.x module on SDXL), by name, before touching anything."""
    if getattr(sd_model, "is_sd2", False) or getattr(sd_model, "parameterization", "eps") == "v":
        raise CCDMSettingsError("motion_module", "the loaded checkpoint is SD2.x (or v-prediction); CCDM motion "
                                "modules fit SD1.x and SDXL checkpoints: load one of those")
    try:
        check_base(module.info, model_base(sd_model))
    except CCDMError as err:
        raise CCDMSettingsError("motion_module", str(err)) from None


def check_run(sd_model, module: MotionModule, settings: CCDMSettings) -> None:
    """All checks of a run, so that a bad combination fails before the UNet is touched."""
    check_model(sd_model, module)
    try:
        check_fit(sd_model.model.diffusion_model, module)
    except ValueError as err:
        raise CCDMSettingsError("motion_module", f"{err}; the loaded checkpoint does not take this module") from None
    limit = module.max_frames
    if min(settings.context_length, settings.frames) > limit:
        raise CCDMSettingsError("context_length", f"{settings.context_length} exceeds the motion module's {limit} "
                                f"frame positions; accepted 1..{limit}")


def module_alphas_cumprod(sd_model, module: MotionModule):
    """The module's training schedule with the model's number of timesteps."""
    info = module.info
    return make_alphas_cumprod(info.beta_schedule, info.beta_start, info.beta_end, len(sd_model.alphas_cumprod))


@contextlib.contextmanager
def video_patches(sd_model, module: MotionModule, settings: CCDMSettings, attention_fn: AttentionFn,
                  keyframes: Sequence[int] = ()) -> Iterator[MotionHandle]:
    """For the block: motion module injected (v1: GroupNorm over frames), module's alphas_cumprod, attention
    backend, cross-frame attention (anchors: `keyframes` in each window, else its first frame; strength 0
    patches nothing) and context windows per video on the UNet's forward; all restored on exit, whatever happens."""
    # 1. Check everything before changing anything.
    check_run(sd_model, module, settings)
    unet = sd_model.model.diffusion_model
    schedule = module_alphas_cumprod(sd_model, module)
    first = min(settings.frames, settings.context_length)
    frame_ctx = FrameContext(settings.cross_frame_strength)
    # 2. Patch; the ExitStack unwinds in reverse order on success, error or interrupt.
    with contextlib.ExitStack() as stack:
        _register(stack)
        stack.enter_context(use_attention_backend(attention_fn))
        stack.enter_context(swap_alphas_cumprod(sd_model, schedule))
        stack.enter_context(cross_frame_attention(unet, frame_ctx))
        handle = stack.enter_context(inject_motion(unet, module, first))
        stack.enter_context(windowed_unet_forward(unet, handle, settings.frames, settings.context_length,
                                                  settings.context_overlap, settings.closed_loop,
                                                  frame_ctx if frame_ctx.strength > 0 else None, keyframes))
        yield handle


def _register(stack: contextlib.ExitStack) -> None:
    with _LOCK:
        _ACTIVE.append(stack)

    def unregister():
        with _LOCK:
            if stack in _ACTIVE:
                _ACTIVE.remove(stack)
    stack.callback(unregister)


def active_runs() -> int:
    return len(_ACTIVE)


def restore_leftovers() -> int:
    """Undo patches of runs that never reached their `finally` (defensive: start of a run, script unload)."""
    with _LOCK:
        stacks = list(reversed(_ACTIVE))
    for stack in stacks:
        stack.close()
    return len(stacks)
