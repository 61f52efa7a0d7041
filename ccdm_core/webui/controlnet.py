"""ControlNet hand-off: keyframe ControlNet conditions become per-frame hints of sd-webui-controlnet 1.1.4xx.

Read against ControlNet v1.1.419 (commit aa4747ab, 2023-11-20), the line that runs on WebUI 1.6.0; no code of
it is used here, only its public `external_code` module (`ControlNetUnit`, `find_cn_script`, `get_models`,
`get_modules`) and the state its script keeps for a run (`Script.enabled_units`, `Script.latest_network`, a
`UnetHook` whose `control_params` are `ControlParams` with `hint_cond`, `hr_hint_cond`, `weight`,
`advanced_weighting`, `guidance_stopped` and the caches `used_hint_cond*`). ControlNet is optional: when it is
absent every function here answers "nothing to do" (or refuses a keyframe that asks for it), and nothing is
imported or patched.

That line applies one hint image per unit to every item of a UNet call. The flow of a CCDM run (WebUI 1.6.0):
1. `before_process` (CCDM's script) -> `install_units(p, settings)`: one ControlNet unit per keyframe with a
   `controlnet` spec, the keyframe image as its control image, put in free (disabled) unit slots of
   `p.script_args`. The slot count is kept: `external_code.update_cn_script_in_processing` would move every later
   script's `args_from`/`args_to`, which are shared by all runs. The txt2vid route, whose processing object has no
   scripts, wraps `process_images` in `controlnet_scripts(p, settings)` instead.
2. ControlNet's `process()` preprocesses each keyframe image into a hint `[1, C, H, W]`, builds its ControlParams,
   puts its forward on the UNet (instance attribute) and wraps `p.sample` (around CCDM's wrapper).
3. Inside CCDM's wrapped `p.sample`, so after step 2: `controlnet_frames(p, run)` is entered BEFORE
   `video_patches`, so that its forward sits between CCDM's windowed forward and ControlNet's; and
   `control.tag_frames()` right AFTER `video_patches`, as the outermost forward, which tags each item of the
   WebUI's batch with its frame (`i % F`). CCDM's windows slice that tag like every per-item tensor, so each call
   of ControlNet's forward (one window of one video) gets exactly its frames' hints and weights, whether the WebUI
   batches cond and uncond (2F) or splits them. The hints and weights are set on ControlNet's ControlParams for that
   one call and put back (by identity) right after it.
4. After the run: the forward is restored, the ControlParams' attributes are checked (and put back) by identity,
   and `restore_units(p)` (CCDM's `postprocess`, or the route's context manager) puts back `p.script_args`.

Per frame, the strongest keyframe takes the frame (see `ccdm_core.control_hints`); keyframes that share a control
model are merged into one ControlParams with per-frame hints, the others of the group are stopped for the call,
and a control whose frames in the call all have weight 0 is skipped.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import importlib
import io
import json
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from ..control_hints import (ControlSpec, FrameHints, FramePlan, batch_frame_index, control_spec_from_dict,
                             plan_frames, replaced_attributes, weight_column)
from ..errors import CCDMError
from ..patching import MISSING, current_forward
from .settings import CCDMSettingsError
from .video_unet import instance_forward

EXTERNAL_CODE = "scripts.external_code"
API_NAMES = ("ControlNetUnit", "find_cn_script", "get_models", "get_modules")
UNIT_MARK = "ccdm_keyframe_frame"  # set on our units; ControlNet's copy() keeps it, its infotext ignores it
STATE_ATTR = "_ccdm_controlnet"  # on p: what install_units changed
FRAME_KWARG = "ccdm_control_frames"  # the per-item frame tag passed through CCDM's windows to our forward
# Preprocessors whose ControlNet path is not a per-item hint (attention injection, CLIP-vision embeddings, VAE
# latents of the hint, prompt-token adapters): per-frame hints cannot be given to them.
UNSUPPORTED_MODULES = ("reference", "revision", "ip-adapter", "ip_adapter", "inpaint_only", "colorfix",
                       "clip_vision", "t2ia_style")
SUPPORTED_TYPES = ("ControlNet", "T2I_Adapter")
FIELD = "keyframes"
# ControlParams attributes set per call and checked after the run (`guidance_stopped` is set per call too, but
# ControlNet itself updates it every step, so it is only restored per call).
TOUCHED = ("_hint_cond", "hint_cond", "hr_hint_cond", "weight", "advanced_weighting", "used_hint_cond",
           "used_hint_cond_latent", "used_hint_inpaint_hijack")


# ---------------------------------------------------------------- discovery

def external_code():
    """ControlNet's `external_code` module when ControlNet is loaded, else None (never raises)."""
    module = sys.modules.get(EXTERNAL_CODE)
    if module is None:
        try:
            module = importlib.import_module(EXTERNAL_CODE)
        except Exception:  # absent (ImportError) or broken while importing: ControlNet is optional
            return None
    return module if all(hasattr(module, name) for name in API_NAMES) else None


def available() -> bool:
    return external_code() is not None


def supported_module(name: str) -> bool:
    return not any(part in name.lower() for part in UNSUPPORTED_MODULES)


def controlnet_options() -> Dict[str, List[str]]:
    """ControlNet's preprocessors (those usable per frame) and models; empty lists when ControlNet is absent."""
    cn = external_code()
    if cn is None:
        return {"modules": [], "models": []}
    try:
        modules = [str(m) for m in cn.get_modules() if supported_module(str(m))]
        models = [str(m) for m in cn.get_models()]
    except Exception as err:  # ControlNet's lists failed: keep the UI working, say why
        print(f"CCDM: could not read ControlNet's preprocessor and model lists: {type(err).__name__}: {err}")
        return {"modules": [], "models": []}
    return {"modules": modules, "models": models}


def controlnet_options_json() -> str:
    """The value of the hidden `#ccdm_controlnet_options` textbox: `{"modules": [...], "models": [...]}`."""
    return json.dumps(controlnet_options())


def _require(frame: int):
    cn = external_code()
    if cn is None:
        raise CCDMSettingsError(FIELD, f"keyframe at frame {frame}: controlnet needs the ControlNet extension "
                                "(sd-webui-controlnet 1.1.4xx), which is not installed; set controlnet to null")
    return cn


# ---------------------------------------------------------------- keyframe specs

@dataclasses.dataclass(frozen=True)
class KeyframeControl:
    """A keyframe's ControlNet condition with its frame and image."""

    frame: int
    spec: ControlSpec
    image: Any


def parse_control_spec(frame: int, value: Any) -> Optional[ControlSpec]:
    """A keyframe's `controlnet` field (null or {module, model, weight 0..2, radius >= 0}), checked by field."""
    try:
        return control_spec_from_dict(value)
    except CCDMError as err:
        raise CCDMSettingsError(FIELD, f"keyframe at frame {frame}: {err}") from None


def keyframe_controls(settings) -> List[KeyframeControl]:
    """The keyframes of `settings` that carry a ControlNet condition, in frame order."""
    out = []
    for kf in getattr(settings, "keyframes", None) or ():
        spec = parse_control_spec(kf.frame, getattr(kf, "controlnet", None))
        if spec is None:
            continue
        if kf.image is None:
            raise CCDMSettingsError(FIELD, f"keyframe at frame {kf.frame}: controlnet needs the keyframe's image")
        out.append(KeyframeControl(kf.frame, spec, kf.image))
    return sorted(out, key=lambda c: c.frame)


def _listing(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "") if names else "(none)"


def resolve_spec(cn, control: KeyframeControl) -> ControlSpec:
    """The spec with the preprocessor and model named as ControlNet lists them; unknown or unsupported refused."""
    spec, label = control.spec, f"keyframe at frame {control.frame}: controlnet"
    modules = [str(m) for m in cn.get_modules()]
    try:
        aliases = [str(m) for m in cn.get_modules(alias_names=True)]
    except TypeError:
        aliases = modules
    lookup = {m.lower(): m for m in modules}
    lookup.update({a.lower(): m for a, m in zip(aliases, modules) if a.lower() not in lookup})
    module = lookup.get(spec.module.lower())
    usable = [m for m in modules if supported_module(m)]
    if module is None:
        raise CCDMSettingsError(FIELD, f"{label}.module: unknown preprocessor {spec.module!r}; accepted: "
                                f"{_listing(usable)}")
    if not supported_module(module):
        raise CCDMSettingsError(FIELD, f"{label}.module: {module!r} cannot be given per frame (reference, revision, "
                                "IP-Adapter, inpaint_only, colorfix and style adapters work on the whole batch); "
                                f"accepted: {_listing(usable)}")
    models = [str(m) for m in cn.get_models() if str(m) != "None"]
    by_name = {m.lower(): m for m in models}
    by_name.update({m.split(" [")[0].lower(): m for m in models if m.split(" [")[0].lower() not in by_name})
    model = by_name.get(spec.model.lower()) or by_name.get(spec.model.split(" [")[0].lower())
    if model is None:
        raise CCDMSettingsError(FIELD, f"{label}.model: unknown ControlNet model {spec.model!r}; accepted: "
                                f"{_listing(models)}")
    return dataclasses.replace(spec, module=module, model=model)


# ---------------------------------------------------------------- units in p.script_args

@dataclasses.dataclass
class ControlState:
    """What `install_units` changed on a processing object, to be put back by `restore_units`."""

    controls: List[KeyframeControl]
    units: list
    script_args: Any  # p.script_args before the units went in


def _image_array(control: KeyframeControl):
    import numpy as np

    from ..keyframes import load_image

    try:
        return np.asarray(load_image(control.image, f"keyframe at frame {control.frame}"), dtype=np.uint8)
    except CCDMError as err:
        raise CCDMSettingsError(FIELD, str(err)) from None


def build_unit(cn, control: KeyframeControl):
    """A ControlNet unit for one keyframe: its image, crop-and-resize like CCDM's keyframes, pixel-perfect."""
    spec = control.spec
    resize = getattr(getattr(cn, "ResizeMode", None), "INNER_FIT", "Crop and Resize")
    mode = getattr(getattr(cn, "ControlMode", None), "BALANCED", "Balanced")
    values = {"enabled": True, "module": spec.module, "model": spec.model, "weight": spec.weight,
              "image": _image_array(control), "resize_mode": resize, "low_vram": False, "pixel_perfect": True,
              "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": mode,
              "save_detected_map": False}  # no detected maps appended to the frames
    fields = set(vars(cn.ControlNetUnit()))
    unit = cn.ControlNetUnit(**{k: v for k, v in values.items() if k in fields})
    setattr(unit, UNIT_MARK, control.frame)
    return unit


def _is_enabled_unit(arg: Any) -> bool:
    """Whether a ControlNet slot is in use (None and disabled units are free; unknown objects are not)."""
    if arg is None:
        return False
    if isinstance(arg, dict):
        return bool(arg.get("enabled", True))
    return bool(getattr(arg, "enabled", True))


def install_units(p, settings) -> Optional[ControlState]:
    """Put one ControlNet unit per keyframe condition into free ControlNet slots of `p.script_args`."""
    restore_units(p)  # a previous install on the same p (loopback, retries)
    controls = keyframe_controls(settings)
    if not controls:
        return None
    cn = _require(controls[0].frame)
    cn_script = cn.find_cn_script(getattr(p, "scripts", None))
    if cn_script is None:
        raise CCDMSettingsError(FIELD, "ControlNet is installed but not part of this run's scripts; keyframe "
                                "controlnet conditions need it")
    controls = [dataclasses.replace(c, spec=resolve_spec(cn, c)) for c in controls]
    units = [build_unit(cn, c) for c in controls]
    args = list(p.script_args or ())
    start, stop = cn_script.args_from, cn_script.args_to
    if start is None or stop is None or len(args) < stop:
        raise CCDMSettingsError(FIELD, "this run's script arguments hold no ControlNet units")
    free = [i for i in range(start, stop) if not _is_enabled_unit(args[i])]
    if len(free) < len(units):
        raise CCDMSettingsError(FIELD, f"{len(units)} keyframes have a ControlNet condition but only {len(free)} of "
                                f"ControlNet's {stop - start} units are free; raise Settings > ControlNet > "
                                "'Multi-ControlNet: ControlNet unit number' (control_net_unit_count, then "
                                "restart) or disable a ControlNet unit")
    for i, unit in zip(free, units):
        args[i] = unit
    state = ControlState(controls, units, p.script_args)
    p.script_args = tuple(args) if isinstance(p.script_args, tuple) else args
    setattr(p, STATE_ATTR, state)
    return state


def restore_units(p) -> bool:
    """Put back `p.script_args` as it was before `install_units` (True when there was something to undo)."""
    state = vars(p).pop(STATE_ATTR, None) if hasattr(p, "__dict__") else None
    if state is None:
        return False
    p.script_args = state.script_args
    return True


@contextlib.contextmanager
def controlnet_scripts(p, settings, is_img2img: bool = False) -> Iterator[Optional[ControlState]]:
    """For a processing object without scripts (the txt2vid route): ControlNet's script alone as `p.scripts`
    with the keyframe units, around `process_images`; `p.scripts`, `p.script_args` and ControlNet's argument
    positions are put back after, whatever happens. Without keyframe conditions it does nothing."""
    controls = keyframe_controls(settings)
    if not controls or getattr(p, "scripts", None) is not None:
        state = install_units(p, settings) if controls else None
        try:
            yield state
        finally:
            restore_units(p)
        return
    cn = _require(controls[0].frame)
    from modules import scripts as webui_scripts

    cn_script = cn.find_cn_script(webui_scripts.scripts_img2img if is_img2img else webui_scripts.scripts_txt2img)
    if cn_script is None:
        raise CCDMSettingsError(FIELD, "ControlNet is installed but its script is not loaded; keyframe controlnet "
                                "conditions need it")
    runner = webui_scripts.ScriptRunner()
    runner.scripts, runner.alwayson_scripts = [cn_script], [cn_script]
    saved, positions = (p.scripts, p.script_args), (cn_script.args_from, cn_script.args_to)
    try:
        p.script_args = [None] * cn_script.args_from + [cn.ControlNetUnit(enabled=False)
                                                        for _ in range(cn_script.args_to - cn_script.args_from)]
        p.scripts = runner
        yield install_units(p, settings)
    finally:
        restore_units(p)
        p.scripts, p.script_args = saved
        cn_script.args_from, cn_script.args_to = positions


# ---------------------------------------------------------------- per-frame hints during sampling

@dataclasses.dataclass
class ControlGroup:
    """Keyframe conditions that share a control model: the first carries the per-frame hints, the rest wait."""

    leader: Any  # ControlParams
    followers: List[Any]
    hints: FrameHints
    hr_hints: Optional[FrameHints]

    def for_call(self, stack: contextlib.ExitStack, rows, x) -> None:
        """Set this call's hints and weights on the ControlParams; the stack puts them back after the call."""
        for follower in self.followers:
            stack.enter_context(replaced_attributes(follower, [("guidance_stopped", True)]))
        leader = self.leader
        weights = weight_column(self.hints.frame_weights(rows), x)
        values: List[Tuple[str, Any]] = [("used_hint_cond", None), ("used_hint_cond_latent", None),
                                         ("used_hint_inpaint_hijack", None), ("hint_cond", self.hints.hints(rows))]
        if self.hr_hints is not None:
            values.append(("hr_hint_cond", self.hr_hints.hints(rows)))
        if getattr(leader, "advanced_weighting", None) is None:
            values.append(("weight", weights))
        else:
            values.append(("advanced_weighting", [scale * weights for scale in leader.advanced_weighting]))
        values.append(("guidance_stopped", bool(leader.guidance_stopped) or not self.hints.active(rows)))
        stack.enter_context(replaced_attributes(leader, values))


class ControlFramesForward:
    """The UNet forward between CCDM's windows and ControlNet's: per call, the frames' hints and weights.

    Calls tagged by `FrameTagger` (through CCDM's windows) name their frames; an untagged call is taken as whole
    videos of `frames` (all the clip's frames, or e.g. `[0]` for the anchor-first image)."""

    def __init__(self, unet, previous, groups: List[ControlGroup], frames: Sequence[int]):
        self.unet, self.previous, self.groups = unet, previous, groups
        self.frames = torch.as_tensor(list(frames), dtype=torch.long)

    def __call__(self, x, *args, **kwargs):
        rows = kwargs.pop(FRAME_KWARG, None)
        if rows is None:
            rows = self.frames.to(x.device)[batch_frame_index(x.shape[0], len(self.frames), x.device)]
        with contextlib.ExitStack() as stack:
            for group in self.groups:
                group.for_call(stack, rows, x)
            return current_forward(self.unet, self.previous)(x, *args, **kwargs)


class FrameTagger:
    """The outermost UNet forward: tags each item of the WebUI's `(n f)` batch with its frame."""

    def __init__(self, unet, previous, num_frames: int):
        self.unet, self.previous, self.num_frames = unet, previous, num_frames

    def __call__(self, x, *args, **kwargs):
        kwargs[FRAME_KWARG] = batch_frame_index(x.shape[0], self.num_frames, x.device)
        return current_forward(self.unet, self.previous)(x, *args, **kwargs)


class FrameControl:
    """What `controlnet_frames` yields: `tag_frames()` to enter right after CCDM's `video_patches`."""

    def __init__(self, unet=None, num_frames: int = 0, groups: Sequence[ControlGroup] = ()):
        self.unet, self.num_frames, self.groups = unet, num_frames, list(groups)

    @property
    def active(self) -> bool:
        return bool(self.groups)

    def tag_frames(self):
        if not self.active:
            return contextlib.nullcontext()
        return instance_forward(self.unet, lambda previous: FrameTagger(self.unet, previous, self.num_frames),
                                "the CCDM ControlNet hand-off")


def _prepared_params(cn_script, state: ControlState) -> List[Tuple[int, Any]]:
    """(index into state.controls, ControlParams) for each keyframe condition, as ControlNet prepared them."""
    network = getattr(cn_script, "latest_network", None)
    params = list(getattr(network, "control_params", None) or [])
    units = list(getattr(cn_script, "enabled_units", None) or [])
    found = {}
    if len(units) == len(params):
        for unit, param in zip(units, params):
            frame = getattr(unit, UNIT_MARK, None)
            if frame is not None:
                found[frame] = param
    missing = [c.frame for c in state.controls if c.frame not in found]
    if missing:
        raise CCDMSettingsError(FIELD, f"ControlNet did not prepare the condition of the keyframes at frames {missing} "
                                "(ControlNet's own error, if any, is in the console above)")
    for control in state.controls:
        _check_param(control, found[control.frame])
    return [(i, found[c.frame]) for i, c in enumerate(state.controls)]


def _check_param(control: KeyframeControl, param) -> None:
    label = f"keyframe at frame {control.frame}: controlnet"
    kind = getattr(getattr(param, "control_model_type", None), "name", None)
    name = str((getattr(param, "preprocessor", None) or {}).get("name", control.spec.module))
    if kind not in SUPPORTED_TYPES or not supported_module(name) or (kind == "T2I_Adapter" and param.cfg_injection):
        raise CCDMSettingsError(FIELD, f"{label}: {control.spec.model!r} with {name!r} is a {kind} control, which "
                                "cannot be given per frame; accepted: ControlNet and T2I-Adapter models")
    hint = param.hint_cond
    if not isinstance(hint, torch.Tensor) or hint.dim() != 4 or hint.shape[0] != 1:
        raise CCDMSettingsError(FIELD, f"{label}: ControlNet prepared no single hint image for this keyframe")


def _shape(value) -> Optional[tuple]:
    return tuple(value.shape) if hasattr(value, "shape") else None


def build_groups(pairs: Sequence[Tuple[int, Any]], plan: FramePlan) -> List[ControlGroup]:
    """Group the ControlParams that run the same control model the same way; per-frame hints for each group."""
    keyed: Dict[tuple, List[Tuple[int, Any]]] = {}
    for index, param in pairs:
        key = (id(param.control_model), str((getattr(param, "preprocessor", None) or {}).get("name")),
               _shape(param.hint_cond), _shape(param.hr_hint_cond), getattr(param, "soft_injection", None),
               getattr(param, "cfg_injection", None), param.start_guidance_percent, param.stop_guidance_percent,
               getattr(param, "global_average_pooling", None), getattr(param, "advanced_weighting", None) is None)
        keyed.setdefault(key, []).append((index, param))
    groups = []
    for members in keyed.values():
        sub = plan.restricted([index for index, _ in members])
        params = [param for _, param in members]
        hr = [param.hr_hint_cond for param in params]
        hr_hints = FrameHints(hr, sub) if all(_shape(h) is not None for h in hr) else None
        groups.append(ControlGroup(params[0], params[1:], FrameHints([q.hint_cond for q in params], sub), hr_hints))
    return groups


def _snapshot(params: Sequence[Any]) -> List[Tuple[Any, Dict[str, Any]]]:
    return [(param, {k: vars(param)[k] for k in TOUCHED if k in vars(param)}) for param in params]


def _put_back(snapshot: List[Tuple[Any, Dict[str, Any]]]) -> int:
    """Restore the touched ControlParams attributes by identity; the number that had to be restored."""
    fixed = 0
    for param, saved in snapshot:
        state = vars(param)
        for key in TOUCHED:
            if key in saved and state.get(key, MISSING) is not saved[key]:
                state[key] = saved[key]
                fixed += 1
            elif key not in saved and key in state:
                del state[key]
                fixed += 1
    return fixed


@contextlib.contextmanager
def controlnet_frames(p, run, frames: Optional[Sequence[int]] = None) -> Iterator[FrameControl]:
    """Per-frame ControlNet hints for this sampling call (enter inside CCDM's wrapped `p.sample`, BEFORE
    `video_patches`; enter the yielded `tag_frames()` right AFTER it). `run` has `.settings` (frames,
    closed_loop). `frames`: the clip frames an untagged call renders (default all; `[0]` around the anchor-first
    image, which then gets only frame 0's control). Without keyframe conditions it does nothing. On exit, whatever
    happens: ControlNet's forward is back on the UNet and its ControlParams hold exactly the objects they held
    before."""
    from .controlnet_source import source_groups

    state = getattr(p, STATE_ATTR, None)
    fed = source_groups(p)  # video to video: units fed by the source, one hint per frame (preprocessed once)
    if state is None and not fed:
        yield FrameControl()
        return
    settings = getattr(run, "settings", run)
    # 1. Find what ControlNet prepared for the keyframe units and check it before touching anything.
    pairs = []
    if state is not None:
        cn = _require(state.controls[0].frame)
        pairs = _prepared_params(cn.find_cn_script(p.scripts), state)
    unet = p.sd_model.model.diffusion_model
    if "forward" not in unet.__dict__:
        raise CCDMSettingsError(FIELD, "ControlNet prepared the CCDM conditions but did not hook the UNet")
    # 2. Plan the frames: owner and weight per frame, hints per control model.
    groups = list(fed)
    if state is not None:
        plan = plan_frames(settings.frames, [(c.frame, c.spec) for c in state.controls], settings.closed_loop)
        groups += build_groups(pairs, plan)
    snapshot = _snapshot([param for _, param in pairs] + [group.leader for group in fed])
    frames = list(range(settings.frames)) if frames is None else [int(f) for f in frames]
    if not frames or not all(0 <= f < settings.frames for f in frames):
        raise CCDMSettingsError("frames", f"frames {frames} must name frames of the clip, 0..{settings.frames - 1}")
    # 3. Our forward goes between CCDM's windows and ControlNet's; everything is put back on exit.
    try:
        with instance_forward(unet, lambda previous: ControlFramesForward(unet, previous, groups, frames),
                              "the CCDM ControlNet hand-off"):
            yield FrameControl(unet, settings.frames, groups)
    finally:
        if _put_back(snapshot):
            print("CCDM: ControlNet's per-frame hints were still set after the run; restored ControlNet's own")


# ---------------------------------------------------------------- "Send to ControlNet"

def controlnet_unit_elem_ids(tabname: str = "txt2img", unit: int = 0,
                             unit_count: Optional[int] = None) -> Dict[str, str]:
    """The element ids of one ControlNet unit in a tab (ControlNet 1.1.4xx's `ControlNetUiGroup.render`)."""
    if unit_count is None:
        from modules import shared

        unit_count = int(shared.opts.data.get("control_net_unit_count", 3))
    if not 0 <= unit < max(unit_count, 1):
        raise CCDMSettingsError("unit", f"{unit} is out of range; accepted 0..{max(unit_count, 1) - 1}")
    prefix = f"{tabname}_controlnet_" + (f"ControlNet-{unit}" if unit_count > 1 else "ControlNet")
    return {"group": f"{tabname}_controlnet", "tab": f"{tabname}_controlnet_tabs", "image": f"{prefix}_input_image",
            "enabled": f"{prefix}_controlnet_enable_checkbox", "module": f"{prefix}_controlnet_preprocessor_dropdown",
            "model": f"{prefix}_controlnet_model_dropdown", "weight": f"{prefix}_controlnet_control_weight_slider"}


def _data_url(image: Any, frame: int) -> str:
    from ..keyframes import load_image

    try:
        pil = load_image(image, f"keyframe at frame {frame}")
    except CCDMError as err:
        raise CCDMSettingsError(FIELD, str(err)) from None
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def send_to_controlnet(keyframes: Any, frame: int, tabname: str = "txt2img", unit: int = 0,
                       unit_count: Optional[int] = None) -> Dict[str, Any]:
    """What the page needs to fill a ControlNet unit with a keyframe's image (to refine it before animating):
    `{"tab", "unit", "frame", "image" (PNG data URL), "module", "model", "weight" (null without a spec),
    "elem_ids"}`. `keyframes` is the keyframes JSON text or list; ControlNet must be installed."""
    if not available():
        raise CCDMSettingsError("controlnet", "the ControlNet extension (sd-webui-controlnet) is not installed")
    items = json.loads(keyframes) if isinstance(keyframes, str) else list(keyframes or [])
    item = next((kf for kf in items if _get(kf, "frame") == frame), None)
    if item is None or _get(item, "image") is None:
        raise CCDMSettingsError(FIELD, f"no keyframe with an image at frame {frame}")
    spec = parse_control_spec(frame, _get(item, "controlnet"))
    return {"tab": tabname, "unit": unit, "frame": frame, "image": _data_url(_get(item, "image"), frame),
            "module": spec.module if spec else None, "model": spec.model if spec else None,
            "weight": spec.weight if spec else None,
            "elem_ids": controlnet_unit_elem_ids(tabname, unit, unit_count)}


def _get(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


__all__ = ["external_code", "available", "controlnet_options", "controlnet_options_json", "parse_control_spec",
           "keyframe_controls", "resolve_spec", "build_unit", "install_units", "restore_units",
           "controlnet_scripts", "controlnet_frames", "FrameControl", "build_groups", "controlnet_unit_elem_ids",
           "send_to_controlnet", "KeyframeControl", "ControlState", "FRAME_KWARG", "UNIT_MARK", "STATE_ATTR"]
