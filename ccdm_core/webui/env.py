"""The few WebUI values CCDM reads (options, folders, hashes, samplers), each behind one small accessor.

Imports of `modules.*` happen inside the functions, so importing this file needs no WebUI.
"""
from __future__ import annotations

import os
from typing import Any, List, Optional

from .settings import FORMAT_NAMES, CCDMSettings

SECTION = ("ccdm", "CCDM")
OPTION_DEFAULTS = {
    "ccdm_default_formats": ["mp4"],
    "ccdm_save_frames": False,
    "ccdm_default_motion_module": "",
    "ccdm_keep_module_in_memory": True,
    "ccdm_outdir": os.path.join("outputs", "txt2vid-videos"),
    "ccdm_source_max_mb": 500,  # video to video: the largest source file read
    "ccdm_report": True,  # a consistency report after each clip
    "ccdm_report_json": False,  # and `<clip>.report.json` beside it
    "ccdm_camera_strength_with_lora": 0.0,  # camera guidance when a motion LoRA makes the prompt's move (0 = off)
}
ANIMATEDIFF_EXTENSION = "sd-webui-animatediff"


def opt(key: str) -> Any:
    """A CCDM option's value (its default before the settings section is registered)."""
    from modules import shared

    default = OPTION_DEFAULTS[key]
    try:
        value = getattr(shared.opts, key)
    except AttributeError:
        return default
    return default if value is None else value


def default_settings() -> CCDMSettings:
    """The UI's and API's starting settings: disabled, formats from the CCDM settings section."""
    formats = [f for f in (opt("ccdm_default_formats") or []) if f in FORMAT_NAMES] or ["mp4"]
    return CCDMSettings(formats=tuple(formats))


def motion_folders() -> List[str]:
    """models/ccdm, --ccdm-motion-dir, and sd-webui-animatediff's model folder(s) when present."""
    from modules import paths_internal, shared

    folders = [os.path.join(paths_internal.models_path, "ccdm")]
    extra = getattr(shared.cmd_opts, "ccdm_motion_dir", None)
    if extra:
        folders.append(extra)
    for root in (paths_internal.extensions_dir, getattr(paths_internal, "extensions_builtin_dir", None)):
        if root and os.path.isdir(os.path.join(root, ANIMATEDIFF_EXTENSION)):  # only an installed AnimateDiff
            folders.append(os.path.join(root, ANIMATEDIFF_EXTENSION, "model"))
    custom = getattr(shared.opts, "data", {}).get("animatediff_model_path") if shared.opts is not None else None
    if custom:
        folders.append(custom)
    seen, out = set(), []
    for folder in folders:
        key = os.path.normcase(os.path.abspath(folder))
        if key not in seen:
            seen.add(key)
            out.append(folder)
    return out


def webui_sha256(path: str, name: str) -> Optional[str]:
    """Full sha256 through the WebUI's hash cache under `ccdm/<name>` (None under --no-hashing)."""
    from modules import hashes

    return hashes.sha256(path, f"ccdm/{name}")


def sampler_names() -> List[str]:
    from modules import sd_samplers

    return list(sd_samplers.visible_sampler_names())


def all_sampler_names() -> List[str]:
    from modules import sd_samplers

    return list(sd_samplers.all_samplers_map)


def optimizer_name() -> Optional[str]:
    from modules import sd_hijack

    current = getattr(sd_hijack, "current_optimizer", None)
    return getattr(current, "name", None)
