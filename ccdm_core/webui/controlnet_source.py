"""Video to video's ControlNet: every enabled ControlNet unit without an image of its own takes the source frames
as its control images, one per frame, each through that unit's own preprocessor, once per run.

Read against sd-webui-controlnet 1.1.4xx (v1.1.419): its script keeps the preprocessors in `Script.preprocessor`
(name -> callable `(image, res=, thr_a=, thr_b=) -> (detected_map, is_image)`) and turns a detected map into the
hint with `Script.detectmap_proc(detected_map, module, resize_mode, h, w) -> (hint, map)`; `external_code` has
`pixel_perfect_resolution` and `resize_mode_from_value`. No code of it is used, only those names.

1. `before_process` -> `feed_source_units(p, frames)`: each such unit is replaced in `p.script_args` by a copy with
   the first source frame as its image and a mark, so ControlNet's `process()` prepares it (model, weights, the
   hint of frame 0); `restore_source_units` puts the user's units back by identity.
2. Inside CCDM's wrapped `p.sample`, `source_groups(p, run)` preprocesses every frame once (cached on the run) and
   gives the keyframe hand-off of `controlnet.py` one group per marked unit whose frame n owns hint n.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, List, Optional, Tuple

import torch

from ..control_hints import FrameHints, FramePlan
from .controlnet import ControlGroup, _is_enabled_unit, external_code
from .settings import CCDMSettingsError

SOURCE_MARK = "ccdm_source_unit"  # on our copies of the user's units; ControlNet's copy() keeps it
STATE_ATTR = "_ccdm_controlnet_source"
FIELD = "source_video"


@dataclasses.dataclass
class SourceUnits:
    """What `feed_source_units` changed on p, and the per-frame hints once computed."""

    script_args: Any  # p.script_args before
    slots: List[int]
    frames: Any  # the source frames, uint8 (f, h, w, 3) at the run's size
    groups: Optional[List[ControlGroup]] = None


def has_own_image(unit: Any) -> bool:
    """Whether a ControlNet unit (object or API dict) brings its own control image (then it keeps it)."""
    if isinstance(unit, dict):
        return any(unit.get(key) is not None for key in ("image", "input_image"))
    return getattr(unit, "image", None) is not None


def _as_unit(cn, unit: Any):
    """A copy of the user's unit as a ControlNetUnit (API dicts converted as ControlNet itself does)."""
    if isinstance(unit, dict):
        convert = getattr(cn, "to_processing_unit", None)
        if convert is not None:
            return copy.copy(convert(dict(unit)))
        fields = set(vars(cn.ControlNetUnit()))
        return cn.ControlNetUnit(**{k: v for k, v in unit.items() if k in fields})
    return copy.copy(unit)


def feed_source_units(p, frames) -> Optional[SourceUnits]:
    """Give each enabled unit without an image the first source frame (and a mark); None when there is none."""
    restore_source_units(p)
    cn = external_code()
    cn_script = cn.find_cn_script(getattr(p, "scripts", None)) if cn is not None else None
    if cn_script is None or cn_script.args_from is None or cn_script.args_to is None:
        return None
    args = list(p.script_args or ())
    slots = [i for i in range(cn_script.args_from, min(cn_script.args_to, len(args)))
             if _is_enabled_unit(args[i]) and not has_own_image(args[i])]
    if not slots:
        return None
    for i in slots:
        unit = _as_unit(cn, args[i])
        unit.image = frames[0]
        setattr(unit, SOURCE_MARK, True)
        args[i] = unit
    state = SourceUnits(p.script_args, slots, frames)
    p.script_args = tuple(args) if isinstance(p.script_args, tuple) else args
    setattr(p, STATE_ATTR, state)
    return state


def restore_source_units(p) -> bool:
    """Put back `p.script_args` as it was before `feed_source_units` (True when there was something to undo)."""
    state = vars(p).pop(STATE_ATTR, None) if hasattr(p, "__dict__") else None
    if state is None:
        return False
    p.script_args = state.script_args
    return True


def _marked_params(cn_script) -> List[Tuple[Any, Any]]:
    """(unit, ControlParams) of the units fed by the source, as ControlNet prepared them."""
    network = getattr(cn_script, "latest_network", None)
    params = list(getattr(network, "control_params", None) or [])
    units = list(getattr(cn_script, "enabled_units", None) or [])
    if len(units) != len(params):
        return []
    return [(unit, param) for unit, param in zip(units, params) if getattr(unit, SOURCE_MARK, False)]


def _preprocess(cn, cn_script, unit, frame, width: int, height: int) -> torch.Tensor:
    """One frame's hint `[C, H, W]` through the unit's preprocessor and ControlNet's hint conversion."""
    preprocessors = getattr(cn_script, "preprocessor", None) or {}
    convert = getattr(type(cn_script), "detectmap_proc", None)
    if unit.module not in preprocessors or convert is None:
        raise CCDMSettingsError(FIELD, f"ControlNet unit with preprocessor {unit.module!r}: this ControlNet has no "
                                "per-image preprocessing CCDM can call (needs sd-webui-controlnet 1.1.4xx)")
    resize_mode = cn.resize_mode_from_value(unit.resize_mode) if hasattr(cn, "resize_mode_from_value") \
        else unit.resize_mode
    res = unit.processor_res
    if getattr(unit, "pixel_perfect", False) and hasattr(cn, "pixel_perfect_resolution"):
        res = cn.pixel_perfect_resolution(frame, target_H=height, target_W=width, resize_mode=resize_mode)
    detected, is_image = preprocessors[unit.module](frame, res=res, thr_a=unit.threshold_a, thr_b=unit.threshold_b)
    if not is_image:
        raise CCDMSettingsError(FIELD, f"ControlNet preprocessor {unit.module!r} gives no image per frame; video to "
                                "video accepts image preprocessors (canny, depth, openpose, lineart, softedge, ...)")
    hint, _ = convert(detected, unit.module, resize_mode, height, width)
    return hint[0] if hint.dim() == 4 else hint


def _frame_hints(cn, cn_script, unit, frames, width: int, height: int, label: str) -> torch.Tensor:
    hints = []
    for n, frame in enumerate(frames):
        hints.append(_preprocess(cn, cn_script, unit, frame, width, height))
        if n % 16 == 15 or n == len(frames) - 1:
            print(f"CCDM: {label}: {n + 1}/{len(frames)} source frames preprocessed ({unit.module})")
    return torch.stack(hints)


def _group(cn, cn_script, p, unit, param, frames) -> ControlGroup:
    """The unit's group: frame n owns hint n, at the unit's own weight (hires hints at the hires size)."""
    count = len(frames)
    hints = _frame_hints(cn, cn_script, unit, frames, int(p.width), int(p.height), "ControlNet")
    if hints.shape[1:] != param.hint_cond.shape[1:]:
        raise CCDMSettingsError(FIELD, f"ControlNet prepared a {tuple(param.hint_cond.shape[1:])} hint but the "
                                f"source frames give {tuple(hints.shape[1:])}")
    weight = float(param.weight) if not torch.is_tensor(param.weight) else float(param.weight.flatten()[0])
    plan = FramePlan(torch.arange(count), torch.full((count,), weight))
    hr = None
    if getattr(param, "hr_hint_cond", None) is not None:
        size = (int(getattr(p, "hr_upscale_to_x", p.width)), int(getattr(p, "hr_upscale_to_y", p.height)))
        hr = FrameHints(list(_frame_hints(cn, cn_script, unit, frames, *size, "ControlNet hires")), plan)
    return ControlGroup(param, [], FrameHints(list(hints.to(param.hint_cond)), plan), hr)


def source_groups(p) -> List[ControlGroup]:
    """The per-frame groups of the units fed by the source (preprocessed on the first call of a run, then reused)."""
    state: Optional[SourceUnits] = getattr(p, STATE_ATTR, None)
    if state is None:
        return []
    if state.groups is None:
        cn = external_code()
        cn_script = cn.find_cn_script(p.scripts)
        pairs = _marked_params(cn_script)
        if len(pairs) != len(state.slots):
            raise CCDMSettingsError(FIELD, f"ControlNet prepared {len(pairs)} of the {len(state.slots)} units the "
                                    "source video feeds (ControlNet's own error, if any, is in the console above)")
        state.groups = [_group(cn, cn_script, p, unit, param, state.frames) for unit, param in pairs]
    return state.groups
