"""Registers CCDM's WebUI callbacks: the txt2vid tab, the settings section, the API routes, the unload hook and the
two CFG-denoiser hooks of a sampling run (keyframe prompts before the UNet, fusion and keyframes after CFG)."""
from __future__ import annotations

import traceback


def _logged(name, fn):
    """The WebUI swallows callback exceptions; print ours visibly, then let the WebUI carry on."""
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception:
            print(f"CCDM: {name} failed:\n{traceback.format_exc()}")
            raise
    return call


def on_ui_tabs():
    from .tab import TAB_ID, build_tab

    return [(build_tab(), "txt2vid", TAB_ID)]


def on_ui_settings():
    from .ui import register_settings

    register_settings()


def on_app_started(demo, app):
    from .api import register_routes

    register_routes(app)


def on_script_unloaded():
    from .patches import restore_leftovers
    from .runtime import release_modules

    restore_leftovers()
    release_modules(force=True)


def register_callbacks() -> None:
    """Called by scripts/ccdm_script.py each time the WebUI (re)loads scripts (it clears callbacks first); also
    adds the LCM sampler to the WebUI's samplers (once), before the UI lists them."""
    from modules import script_callbacks

    from .lcm_sampler import register_lcm_sampler

    try:
        register_lcm_sampler()
    except Exception:  # the rest of CCDM works without it
        print(f"CCDM: the LCM sampler could not be added:\n{traceback.format_exc()}")

    script_callbacks.on_ui_tabs(_logged("txt2vid tab", on_ui_tabs))
    script_callbacks.on_ui_settings(_logged("settings", on_ui_settings))
    script_callbacks.on_app_started(_logged("API routes", on_app_started))
    script_callbacks.on_script_unloaded(_logged("unload", on_script_unloaded))
    script_callbacks.on_cfg_denoiser(_logged("keyframe prompts before the UNet", on_cfg_denoiser))
    script_callbacks.on_cfg_after_cfg(_logged("fusion after CFG", on_cfg_after_cfg))


def on_cfg_denoiser(params):
    """Keyframe prompts' per-frame conditioning of the CCDM run now sampling, and the step's input for guidance of
    noise-prediction samplers; nothing at all otherwise."""
    from .guidance import on_cfg_denoiser as condition

    condition(params)


def on_cfg_after_cfg(params):
    """Fusion and keyframe guidance of the CCDM run now sampling; nothing at all otherwise."""
    from .guidance import on_cfg_after_cfg as guide

    guide(params)
