"""The always-on script "CCDM" for txt2img and img2img: settings in, `runtime` does the work.

Hooks (WebUI 1.6.0 order): `before_process` sets the frame axis (`p.batch_size`) and wraps `p.sample`;
`process` selects, loads and checks the motion module; the wrapped `p.sample` holds every patch for exactly one
sampling call (try/finally); `postprocess` writes the clips. Disabled settings change nothing at all.
"""
from __future__ import annotations

import dataclasses

from modules import scripts

from . import controlnet, controlnet_source, env, video_source
from ..report import report_summary
from .patches import restore_leftovers
from .settings import CCDMSettings, CCDMSettingsError

TITLE = "CCDM"
RUN_ATTR = "_ccdm_run"


class CCDMScript(scripts.Script):
    """Motion module, schedule swap and context windows for the batch; each batch becomes one video."""

    def title(self):
        return TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        from .ui import build_script_ui

        return build_script_ui(self, is_img2img)

    def before_process(self, p, *args):
        before_process(p, args[0] if args else None, self.is_img2img, args[1] if len(args) > 1 else None)

    def process(self, p, *args):
        process(p)

    def postprocess(self, p, processed, *args):
        postprocess(p, processed)


def before_process(p, raw, is_img2img: bool, upload=None) -> None:
    """Parse the settings; when enabled, frames -> p.batch_size and the sampling wrapper is installed; a source
    video (uploaded in the accordion, or `source_video` in the settings) becomes img2img's init images."""
    from . import runtime

    restore_leftovers()  # defensive: a previous run that never reached its finally
    video_source.close_leftovers()
    try:
        settings = CCDMSettings.from_dict(raw, env.default_settings())
    except CCDMSettingsError as err:
        run = runtime.VideoRun(env.default_settings(), is_img2img, error=err)
    else:
        if not settings.enabled:
            return
        run = runtime.VideoRun(settings, is_img2img)
        _read_source(p, run, upload)
        if run.error is None and is_img2img and run.source is None and len(getattr(p, "init_images", None) or []) > 1:
            run.fail(CCDMSettingsError("init_images", "CCDM takes one init image (the first frame of every video), "
                                       f"got {len(p.init_images)}; several frames come from a source video"))
        if run.error is None:
            p.batch_size = run.settings.frames
            try:  # keyframe ControlNet conditions go into free ControlNet units before ControlNet's process()
                controlnet.install_units(p, run.settings)
            except CCDMSettingsError as err:
                run.fail(err)
    setattr(p, RUN_ATTR, run)
    runtime.install_sample_wrapper(p, run)


def _read_source(p, run, upload) -> None:
    """img2img: the source frames replace the init image (one per frame; the tab's denoising strength applies).
    txt2img cannot take init images: there the source drives ControlNet units only."""
    try:
        settings, source = video_source.read_run_source(run.settings, int(p.width), int(p.height), upload)
    except CCDMSettingsError as err:
        run.fail(err)
        return
    if source is None:
        return
    run.source, run.settings = source, settings
    fed = controlnet_source.feed_source_units(p, source.clip.frames) if controlnet.available() else None
    if run.is_img2img:
        p.init_images = video_source.init_images(source)
        run.settings = dataclasses.replace(settings, denoising_strength=float(p.denoising_strength))
    elif fed is None:
        run.fail(CCDMSettingsError("source_video", "in txt2img a source video drives ControlNet units only (the "
                                   "enabled units without an image of their own), and there is none: enable one, "
                                   "or use img2img or the txt2vid tab for init frames"))


def process(p) -> None:
    """Select, load and check the motion module before anything is sampled (errors surface from p.sample)."""
    from . import runtime

    run = getattr(p, RUN_ATTR, None)
    if run is not None and run.error is None:
        runtime.prepare(run, p)


def postprocess(p, processed) -> None:
    """Write one clip per video; report the files (or the failure) in the run's comments."""
    from . import runtime

    controlnet.restore_units(p)  # ControlNet's own units as they were (a no-op when CCDM installed none)
    controlnet_source.restore_source_units(p)
    run = getattr(p, RUN_ATTR, None)
    if run is None or run.error is not None or run.module is None:
        video_source.close_leftovers()
        return
    try:
        clips = runtime.write_clips(p, processed, run, runtime.clip_folder(p))
        lines = [f"CCDM wrote {path}" for clip in clips for path in clip.videos.values()]
        lines += [f"CCDM report: {report_summary(report)}" for report in run.reports if report is not None]
    except Exception as err:  # the WebUI swallows postprocess errors: show this one to the user
        lines = [f"CCDM could not write the video: {type(err).__name__}: {err}"]
        print(lines[0])
    finally:
        runtime.release_modules()
        video_source.close_leftovers()
    processed.comments = (processed.comments or "") + "".join(f"{line}\n" for line in lines)
