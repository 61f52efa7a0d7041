"""FreeInit in the WebUI: CCDM's wrapped `p.sample` runs the WebUI's own `p.sample` once per pass, the later passes
starting from FreeInit's re-initialised noise (handed to `p.sample` through `p.rng`, which it draws its noise from
once per call); the WebUI's progress shows each pass as a job, and Interrupt/Skip end the passes early."""
from __future__ import annotations

import math
from typing import Any, Callable

from einops import rearrange

from ..freeinit import freeinit_passes
from .settings import CCDMSettingsError


class _GivenNoise:
    """A stand-in for `p.rng` whose next draw is the given noise (other attributes from the real one)."""

    def __init__(self, noise, real):
        self._noise, self._real = noise, real

    def next(self):
        return self._noise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Stopped(Exception):
    def __init__(self, result):
        super().__init__("interrupted")
        self.result = result


def check_freeinit(p, run) -> None:
    """FreeInit re-noises a text-to-video result: refused (before anything runs) with init images or hires fix."""
    if not run.settings.freeinit().enabled:
        return
    if run.is_img2img:
        raise CCDMSettingsError("freeinit_iterations", "FreeInit re-noises a text-to-video result; with init images "
                                "(img2img, a source video) accepted: 1")
    if getattr(p, "enable_hr", False):
        raise CCDMSettingsError("freeinit_iterations", "FreeInit with hires fix is not supported; accepted: 1, or "
                                "turn hires fix off")


def _sigma_max(p) -> float:
    """The first sampling sigma of the schedule in force (CCDM swaps in the module's alphas_cumprod for the run)."""
    last = float(p.sd_model.alphas_cumprod[-1])
    return math.sqrt((1.0 - last) / last)


def sample_with_freeinit(p, run, sample: Callable[[], Any]):
    """`sample()` (the WebUI's p.sample with its arguments) once per FreeInit pass; the last pass's latents."""
    settings = run.settings.freeinit()
    if not settings.enabled:
        return sample()
    from modules import shared

    frames, real = run.settings.frames, p.rng
    to_video = lambda x: rearrange(x, "(b f) c h w -> b c f h w", f=frames)  # noqa: E731
    to_batch = lambda x: rearrange(x, "b c f h w -> (b f) c h w")  # noqa: E731

    def sample_pass(noise, index):
        if index > 0:
            shared.state.job_count += 1
            shared.state.nextjob()
        shared.state.textinfo = f"CCDM FreeInit pass {index + 1}/{settings.iterations}"
        p.rng = _GivenNoise(to_batch(noise), real)
        try:
            result = sample()
        finally:
            p.rng = real
        if shared.state.interrupted or shared.state.skipped:
            raise _Stopped(result)
        return to_video(result)

    try:
        initial = to_video(real.next())
        return to_batch(freeinit_passes(sample_pass, initial, _sigma_max(p), settings,
                                        lambda index: to_video(real.next())))
    except _Stopped as stop:
        return stop.result
