"""ControlNet hand-off: per-frame weights and hints as pure functions, the cond/uncond batch layout, restore by
identity, and the WebUI glue against a stand-in of ControlNet 1.1.4xx (its `external_code` module, its script's
`enabled_units`/`latest_network.control_params`, its instance forward on the UNet) with CCDM's real windows."""
from __future__ import annotations

import base64
import copy
import dataclasses
import io
import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ccdm_core.control_hints import (ControlSpec, FrameHints, batch_frame_index, control_spec_from_dict,
                                     expand_to_batch, fade_weights, frame_hints, plan_frames, replaced_attributes)
from ccdm_core.errors import CCDMError
from ccdm_core.webui import controlnet
from ccdm_core.webui.settings import CCDMSettingsError
from ccdm_core.webui.video_unet import windowed_unet_forward

SPEC = ControlSpec("canny", "control_v11p_sd15_canny", 1.0, 0)


def spec(weight=1.0, radius=0, model="control_v11p_sd15_canny", module="canny"):
    return ControlSpec(module, model, weight, radius)


# ---------------------------------------------------------------- specs

def test_spec_from_json_object_with_defaults():
    assert control_spec_from_dict(None) is None
    parsed = control_spec_from_dict({"module": " canny ", "model": "m [abc]"})
    assert parsed == ControlSpec("canny", "m [abc]", 1.0, 0)
    assert control_spec_from_dict(parsed.to_dict()) == parsed
    assert control_spec_from_dict({"module": "depth", "model": "d", "weight": 2, "radius": 3.0}).radius == 3


@pytest.mark.parametrize("value,message", [
    ({"module": "canny", "model": "m", "weight": 2.5}, "controlnet.weight: 2.5 is out of range; accepted 0..2"),
    ({"module": "canny", "model": "m", "weight": True}, "controlnet.weight"),
    ({"module": "canny", "model": "m", "radius": -1}, "controlnet.radius: -1 is out of range"),
    ({"module": "canny", "model": "m", "radius": 1.5}, "controlnet.radius: must be an integer"),
    ({"module": "canny"}, "controlnet.model: missing"),
    ({"module": "", "model": "m"}, "controlnet.module: must be a non-empty string"),
    ({"module": "canny", "model": "m", "colour": 1}, "controlnet.colour: unknown field"),
    ("canny", "controlnet: must be null or an object")])
def test_bad_spec_names_the_field(value, message):
    with pytest.raises(CCDMError, match=message.replace("(", r"\(").replace(".", r"\.")):
        control_spec_from_dict(value)


def test_settings_error_names_the_keyframe_and_the_field():
    with pytest.raises(CCDMSettingsError) as info:
        controlnet.parse_control_spec(12, {"module": "canny", "model": "m", "weight": 3})
    assert info.value.field == "keyframes" and info.value.status_code == 422
    assert str(info.value) == "keyframes: keyframe at frame 12: controlnet.weight: 3 is out of range; accepted 0..2"


# ---------------------------------------------------------------- weights per frame

def test_radius_zero_is_the_keyframe_frame_only():
    assert fade_weights(6, 2, 0.8, 0).tolist() == [0, 0, 0.8, 0, 0, 0]
    plan = plan_frames(6, [(2, spec(0.8, 0))])
    assert plan.owners.tolist() == [-1, -1, 0, -1, -1, -1]
    assert plan.weights.tolist() == pytest.approx([0, 0, 0.8, 0, 0, 0])


def test_radius_fades_linearly_to_zero_on_each_side():
    weights = fade_weights(10, 4, 1.0, 3)
    assert weights.tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25, 0, 0])
    assert fade_weights(5, 0, 2.0, 1).tolist() == pytest.approx([2.0, 1.0, 0, 0, 0])  # clipped at the clip's ends


def test_closed_loop_fades_around_the_end():
    assert fade_weights(8, 0, 1.0, 2, closed_loop=True).tolist() == pytest.approx([1, 2 / 3, 1 / 3, 0, 0, 0,
                                                                                    1 / 3, 2 / 3])
    assert plan_frames(8, [(0, spec(1.0, 2))], closed_loop=True).owners.tolist() == [0, 0, 0, -1, -1, -1, 0, 0]


def test_overlapping_keyframes_the_strongest_takes_each_frame():
    plan = plan_frames(9, [(0, spec(1.0, 8)), (8, spec(1.0, 8))])
    # equal weights: each frame goes to the nearer keyframe; the middle frame (a tie) to the earlier one
    assert plan.owners.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert plan.weights.tolist() == pytest.approx([1, 8 / 9, 7 / 9, 6 / 9, 5 / 9, 6 / 9, 7 / 9, 8 / 9, 1])
    strong = plan_frames(9, [(0, spec(0.4, 8)), (8, spec(2.0, 8))])
    assert strong.owners.tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 1]  # 2.0 * (1 - 8/9) = 0.22 < 0.4 only at frame 0
    assert strong.weights[1] == pytest.approx(2.0 * (1 - 7 / 9))
    never = plan_frames(4, [(1, spec(0.0, 3))])  # a zero-weight control owns nothing
    assert never.owners.tolist() == [-1] * 4 and not never.weights.any()


def test_plan_refuses_keyframes_outside_the_clip():
    with pytest.raises(CCDMError, match="outside the clip"):
        plan_frames(4, [(4, SPEC)])


# ---------------------------------------------------------------- hints per frame and per call

def hint(value, channels=3, size=4):
    return torch.full((1, channels, size, size), float(value))


def test_each_frame_takes_its_owner_hint_or_zeros():
    plan = plan_frames(6, [(0, spec(1.0, 1)), (4, spec(1.0, 0))])
    hints = frame_hints([hint(1), hint(2)], plan)
    assert hints.shape == (6, 3, 4, 4)
    assert hints[:, 0, 0, 0].tolist() == [1, 1, 0, 0, 2, 0]
    table = FrameHints([hint(1), hint(2)], plan)
    rows = torch.tensor([3, 4, 5, 0])
    assert table.hints(rows)[:, 0, 0, 0].tolist() == [0, 2, 0, 1] and table.active(rows)
    assert not table.active(torch.tensor([2, 3, 5]))
    assert table.frame_weights(rows).tolist() == [0, 1, 0, 1]


def test_restricted_plan_keeps_only_its_keyframes():
    plan = plan_frames(5, [(0, spec(1, 1)), (2, spec(1, 0)), (4, spec(1, 0))])
    sub = plan.restricted([0, 2])
    assert sub.owners.tolist() == [0, 0, -1, -1, 1] and sub.weights.tolist() == pytest.approx([1, .5, 0, 0, 1])


def test_cond_uncond_layout_2f_and_split_chunks():
    per_frame = torch.arange(4.0)[:, None]
    assert batch_frame_index(8, 4).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert expand_to_batch(per_frame, 8)[:, 0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]  # cond frames, then uncond
    assert expand_to_batch(per_frame, 4)[:, 0].tolist() == [0, 1, 2, 3]  # one chunk when the WebUI splits
    with pytest.raises(CCDMError, match="not a whole number of 4-frame videos"):
        batch_frame_index(6, 4)


class WithProperty:
    def __init__(self):
        self._value, self.cache = "a", "cached"

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, new):
        self._value, self.cache = new, None


def test_replaced_attributes_restores_by_identity_after_an_exception():
    obj = WithProperty()
    weight, cache = torch.ones(1), obj.cache
    obj.weight = weight
    with pytest.raises(RuntimeError, match="boom"):
        with replaced_attributes(obj, [("cache", None), ("value", "b"), ("weight", torch.zeros(1)), ("new", 1)]):
            assert obj.value == "b" and obj.cache is None and not obj.weight.any() and obj.new == 1
            obj.cache = "recomputed"
            raise RuntimeError("boom")
    assert obj.weight is weight and obj.value == "a" and obj.cache is cache and not hasattr(obj, "new")


# ---------------------------------------------------------------- ControlNet absent

def keyframe(frame, color, control=None):
    image = Image.new("RGB", (8, 8), color)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return types.SimpleNamespace(frame=frame, image=url, strength=1.0, prompt=None, controlnet=control)


def video_settings(frames, *keyframes, closed_loop=False):
    return types.SimpleNamespace(frames=frames, closed_loop=closed_loop, keyframes=list(keyframes))


def test_without_controlnet_options_are_empty_and_nothing_is_patched(monkeypatch):
    monkeypatch.delitem(sys.modules, controlnet.EXTERNAL_CODE, raising=False)
    assert controlnet.external_code() is None and not controlnet.available()
    assert json.loads(controlnet.controlnet_options_json()) == {"modules": [], "models": []}
    unet = nn.Identity()
    p = types.SimpleNamespace(scripts=None, script_args=["x"], sd_model=types.SimpleNamespace(
        model=types.SimpleNamespace(diffusion_model=unet)))
    plain = video_settings(4, keyframe(0, "red"))
    assert controlnet.install_units(p, plain) is None and p.script_args == ["x"]
    with controlnet.controlnet_frames(p, types.SimpleNamespace(settings=plain)) as control:
        assert not control.active
        with control.tag_frames():
            assert "forward" not in vars(unet)
    with pytest.raises(CCDMSettingsError, match="keyframe at frame 2: controlnet needs the ControlNet extension"):
        controlnet.install_units(p, video_settings(4, keyframe(2, "red", {"module": "canny", "model": "m"})))
    assert vars(p).keys() == {"scripts", "script_args", "sd_model"} and p.script_args == ["x"]


# ---------------------------------------------------------------- a stand-in ControlNet 1.1.4xx

@dataclasses.dataclass
class FakeUnit:
    enabled: bool = True
    module: str = None
    model: str = None
    weight: float = 1.0
    image: object = None
    resize_mode: str = "Crop and Resize"
    low_vram: bool = False
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: str = "Balanced"
    save_detected_map: bool = True


class FakeParams:
    """Shaped like ControlNet 1.1.4xx's ControlParams (the hint_cond property clears the used_* caches)."""

    def __init__(self, model, hint_cond, weight, name, kind="ControlNet"):
        self.control_model, self.preprocessor, self._hint_cond, self.weight = model, {"name": name}, hint_cond, weight
        self.guidance_stopped, self.start_guidance_percent, self.stop_guidance_percent = False, 0.0, 1.0
        self.advanced_weighting, self.hr_hint_cond, self.global_average_pooling = None, None, False
        self.control_model_type = types.SimpleNamespace(name=kind)
        self.soft_injection = self.cfg_injection = False
        self.used_hint_cond = self.used_hint_cond_latent = self.used_hint_inpaint_hijack = None

    @property
    def hint_cond(self):
        return self._hint_cond

    @hint_cond.setter
    def hint_cond(self, value):
        self._hint_cond = value
        self.used_hint_cond = self.used_hint_cond_latent = self.used_hint_inpaint_hijack = None


class FakeControlNetScript:
    """ControlNet's always-on script: `process` preprocesses each enabled unit (hint = the image's mean colour),
    builds ControlParams and puts its forward on the UNet, which adds `weight x hint` per item and logs the call."""

    def __init__(self, args_from=2, units=3, fail_on_call=None):
        self.args_from, self.args_to = args_from, args_from + units
        self.latest_network, self.enabled_units, self.calls, self.fail_on_call = None, [], [], fail_on_call
        self.models, self.unet_forward = {}, None  # unet_forward(x, t, context): the UNet ControlNet runs

    def title(self):
        return "ControlNet"

    def process(self, p, *args):
        units = [u for u in p.script_args[self.args_from:self.args_to] if u is not None and u.enabled]
        self.enabled_units = [copy.copy(u) for u in units]
        params = []
        for unit in self.enabled_units:
            colour = torch.tensor(np.asarray(unit.image, dtype=np.float32).mean(axis=(0, 1)) / 255.0)
            model = self.models.setdefault(unit.model, nn.Identity())  # ControlNet caches models by name
            params.append(FakeParams(model, colour.view(1, 3, 1, 1).expand(1, 3, 2, 2).clone(), unit.weight,
                                     unit.module, "ControlNet" if "reference" not in unit.module else
                                     "AttentionInjection"))
        self.latest_network = types.SimpleNamespace(control_params=params)
        unet = p.sd_model.model.diffusion_model
        unet._original_forward = unet.forward
        unet.forward = self.forward

    def forward(self, x, timesteps=None, context=None, **kwargs):
        assert not kwargs, "CCDM's frame tag must not reach ControlNet"
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("ControlNet failed mid-run")
        total, seen = torch.zeros_like(x), []
        for param in self.latest_network.control_params:
            if param.guidance_stopped:
                continue
            if param.used_hint_cond is None:
                param.used_hint_cond = param.hint_cond
            h = param.used_hint_cond.mean(dim=(2, 3))[:, :1, None, None]  # [1 or B, 1, 1, 1]
            weight = param.weight
            total = total + h.to(x) * weight
            seen.append((param, torch.as_tensor(h)[:, 0, 0, 0].tolist(), torch.as_tensor(weight).flatten().tolist()))
        self.calls.append((timesteps.tolist(), seen))
        return (x if self.unet_forward is None else self.unet_forward(x, timesteps, context)) + total



def fake_external_code(script):
    module = types.ModuleType(controlnet.EXTERNAL_CODE)
    module.ControlNetUnit = FakeUnit
    module.find_cn_script = lambda runner: next((s for s in getattr(runner, "alwayson_scripts", [])
                                                 if s.title() == "ControlNet"), None)
    module.get_models = lambda update=False: ["control_v11p_sd15_canny [d14c016b]",
                                              "control_v11f1p_sd15_depth [cfd03158]"]
    names = ["none", "canny", "depth_midas", "reference_only", "ip-adapter_clip_sd15", "inpaint_only"]
    module.get_modules = lambda alias_names=False: [n.replace("depth_midas", "depth") if alias_names else n
                                                    for n in names]
    return module


class Passthrough(nn.Module):
    def forward(self, x, timesteps=None, context=None):
        return x


@pytest.fixture
def cn(monkeypatch):
    script = FakeControlNetScript()
    monkeypatch.setitem(sys.modules, controlnet.EXTERNAL_CODE, fake_external_code(script))
    unet = Passthrough()
    runner = types.SimpleNamespace(alwayson_scripts=[script])
    p = types.SimpleNamespace(scripts=runner, script_args=("ccdm", None, FakeUnit(enabled=False), None,
                                                           FakeUnit(enabled=False), "other"),
                              sd_model=types.SimpleNamespace(model=types.SimpleNamespace(diffusion_model=unet)))
    return types.SimpleNamespace(script=script, unet=unet, p=p)


def canny(weight=1.0, radius=0, model="control_v11p_sd15_canny"):
    return {"module": "canny", "model": model, "weight": weight, "radius": radius}


def test_options_list_usable_preprocessors_and_models(cn):
    options = json.loads(controlnet.controlnet_options_json())
    assert options == {"modules": ["none", "canny", "depth_midas"],
                       "models": ["control_v11p_sd15_canny [d14c016b]", "control_v11f1p_sd15_depth [cfd03158]"]}


@pytest.mark.parametrize("control,message", [
    ({"module": "sobel", "model": "control_v11p_sd15_canny"}, "controlnet.module: unknown preprocessor 'sobel'"),
    ({"module": "reference_only", "model": "control_v11p_sd15_canny"}, "cannot be given per frame"),
    ({"module": "canny", "model": "control_v99"}, "controlnet.model: unknown ControlNet model 'control_v99'")])
def test_unknown_or_unsupported_names_are_refused(cn, control, message):
    with pytest.raises(CCDMSettingsError, match=message) as info:
        controlnet.install_units(cn.p, video_settings(4, keyframe(1, "red", control)))
    assert "keyframe at frame 1" in str(info.value) and cn.p.script_args[0] == "ccdm"


def test_units_go_into_free_slots_and_come_back_out(cn):
    before = cn.p.script_args
    settings = video_settings(8, keyframe(5, "blue", {"module": "depth", "model": "CONTROL_V11F1P_SD15_DEPTH"}),
                              keyframe(0, "red", canny()))
    state = controlnet.install_units(cn.p, settings)
    args = cn.p.script_args
    assert isinstance(args, tuple) and len(args) == len(before) and args[0] == "ccdm" and args[-1] == "other"
    units = [args[2], args[3]]  # the first free slots (a disabled unit, an empty slot); slot 4 stays as it was
    assert [u.module for u in units] == ["canny", "depth_midas"] and args[4] is before[4]
    assert units[1].model == "control_v11f1p_sd15_depth [cfd03158]"
    assert [getattr(u, controlnet.UNIT_MARK) for u in units] == [0, 5] and [c.frame for c in state.controls] == [0, 5]
    assert not units[0].save_detected_map and units[0].pixel_perfect and units[0].image.shape == (8, 8, 3)
    assert tuple(units[0].image[0, 0]) == (255, 0, 0)
    assert controlnet.restore_units(cn.p) and cn.p.script_args is before and not controlnet.restore_units(cn.p)


def test_more_conditions_than_free_units_are_refused(cn):
    settings = video_settings(8, *[keyframe(i, "red", canny()) for i in range(4)])
    with pytest.raises(CCDMSettingsError, match="4 keyframes have a ControlNet condition but only 3 of ControlNet's "
                                                "3 units are free"):
        controlnet.install_units(cn.p, settings)


def test_keyframe_without_image_is_refused(cn):
    kf = keyframe(1, "red", canny())
    kf.image = None
    with pytest.raises(CCDMSettingsError, match="keyframe at frame 1: controlnet needs the keyframe's image"):
        controlnet.install_units(cn.p, video_settings(4, kf))


# ---------------------------------------------------------------- the hand-off during sampling

FRAMES = 6
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)  # hint channel 0 (what the stand-in logs): 1, 0, 0


def run_sampling(cn, settings, batched=True, context=(4, 2), fail=None):
    """What CCDM's wrapped p.sample does: controlnet_frames, then the windows, then the frame tags, then CFG calls."""
    cn.script.process(cn.p)  # ControlNet's process(): params prepared, its forward on the UNet
    cn_forward = vars(cn.unet)["forward"]
    run = types.SimpleNamespace(settings=settings)
    handle = types.SimpleNamespace(num_frames=None)
    x = torch.zeros(2 * FRAMES, 1, 1, 1)
    t = torch.arange(2 * FRAMES)
    try:
        with controlnet.controlnet_frames(cn.p, run) as control:
            with windowed_unet_forward(cn.unet, handle, FRAMES, context[0], context[1], False):
                with control.tag_frames():
                    if fail:
                        raise RuntimeError(fail)
                    if batched:
                        return cn.unet(x, t, context=None)
                    return torch.cat([cn.unet(x[:FRAMES], t[:FRAMES]), cn.unet(x[FRAMES:], t[FRAMES:])])
    finally:
        assert vars(cn.unet)["forward"] is cn_forward  # ControlNet's forward is back


def per_frame(out):
    return out[:, 0, 0, 0].tolist()


def test_each_frame_gets_its_keyframe_hint_and_weight_in_every_window(cn):
    settings = video_settings(FRAMES, keyframe(0, "red", canny(1.0, 2)), keyframe(5, "blue", canny(0.5, 0)))
    controlnet.install_units(cn.p, settings)
    out = run_sampling(cn, settings)
    # red hint (1.0) fades over 2 frames from frame 0; blue's channel 0 is 0; frames 3, 4 have no control
    expected = [1.0, 2 / 3, 1 / 3, 0.0, 0.0, 0.0]
    assert per_frame(out) == pytest.approx(expected * 2)  # cond frames, then uncond frames
    for timesteps, seen in cn.script.calls:
        assert len(timesteps) == 4  # one window of one video per call
        frames = [t % FRAMES for t in timesteps]
        (leader, hints, weights), = seen  # one control model: one ControlParams runs, the other waits
        assert hints == [1.0 if f <= 2 else 0.0 for f in frames]
        assert weights == pytest.approx([[1.0, 2 / 3, 1 / 3, 0, 0, 0.5][f] for f in frames])


def test_batched_and_split_cond_uncond_see_the_same_hints(cn):
    settings = video_settings(FRAMES, keyframe(1, "red", canny(1.0, 1)), keyframe(4, "green", canny(1.0, 1)))
    controlnet.install_units(cn.p, settings)
    batched = run_sampling(cn, settings, batched=True)
    calls = [(t, [(h, w) for _, h, w in seen]) for t, seen in cn.script.calls]
    cn.script.calls.clear()
    split = run_sampling(cn, settings, batched=False)
    assert torch.equal(batched, split)
    assert calls == [(t, [(h, w) for _, h, w in seen]) for t, seen in cn.script.calls]


def test_windows_without_a_weighted_frame_skip_the_control(cn):
    settings = video_settings(FRAMES, keyframe(0, "red", canny(1.0, 0)))
    controlnet.install_units(cn.p, settings)
    run_sampling(cn, settings, context=(2, 0))  # windows [0,1], [2,3], [4,5]
    assert [len(seen) for _, seen in cn.script.calls] == [1, 0, 0, 1, 0, 0]


def test_anchor_first_image_gets_only_frame_zero_control(cn):
    settings = video_settings(FRAMES, keyframe(0, "red", canny(0.5, 1)), keyframe(3, "red", canny(1.0, 3)))
    controlnet.install_units(cn.p, settings)
    cn.script.process(cn.p)
    x, t = torch.zeros(2, 1, 1, 1), torch.arange(2)  # one image: cond and uncond, untagged
    with controlnet.controlnet_frames(cn.p, types.SimpleNamespace(settings=settings), frames=[0]):
        out = cn.unet(x, t)
    # frame 0: keyframe 0 (0.5) against keyframe 3 at distance 3 (1.0 * 1/4): keyframe 0 takes it
    assert per_frame(out) == pytest.approx([0.5, 0.5])
    with pytest.raises(CCDMSettingsError, match="must name frames of the clip"):
        with controlnet.controlnet_frames(cn.p, types.SimpleNamespace(settings=settings), frames=[FRAMES]):
            pass


def test_different_models_each_control_their_own_frames(cn):
    settings = video_settings(FRAMES, keyframe(0, "red", canny(1.0, 1)),
                              keyframe(5, "red", {"module": "depth_midas", "model": "control_v11f1p_sd15_depth"}))
    controlnet.install_units(cn.p, settings)
    out = run_sampling(cn, settings, context=(6, 0))
    assert per_frame(out)[:FRAMES] == pytest.approx([1.0, 0.5, 0, 0, 0, 1.0])
    (_, seen), = cn.script.calls[:1]
    assert [w for _, _, w in seen] == [pytest.approx([1, .5, 0, 0, 0, 0]), pytest.approx([0, 0, 0, 0, 0, 1])]


def test_hand_off_inside_the_real_video_patches_batched_equals_split(cn, monkeypatch):
    """With a tiny ldm UNet, a motion module, context windows and cross-frame attention: the frame tags pass
    through CCDM's patches, batched and split CFG give identical outputs, and the model is restored."""
    from ccdm_core import new_motion_module
    from ccdm_core.attention import sdpa_attention
    from ccdm_core.webui.patches import video_patches
    from ccdm_core.webui.settings import CCDMSettings
    from conftest import make_unet, randomize_, unet_inputs
    from test_webui_unet import FakeSDModel

    unet = make_unet()
    sd_model = FakeSDModel(unet)
    module = randomize_(new_motion_module(unet, "animatediff-v2", max_frames=8), seed=3, scale=0.05)
    cn.p.sd_model = sd_model
    cn.script.unet_forward = lambda x, t, context: type(unet).forward(unet, x, t, context)
    video = CCDMSettings(enabled=True, frames=FRAMES, context_length=4, context_overlap=2)
    settings = video_settings(FRAMES, keyframe(0, "red", canny(1.0, 1)), keyframe(4, "red", canny(2.0, 0)))
    x, _, ctx = unet_inputs(frames=FRAMES, videos=2)
    t = 100.0 + torch.arange(2 * FRAMES)  # item i at timestep 100 + i, so the log tells the frames
    outs = []
    for batched in (True, False):
        controlnet.install_units(cn.p, settings)
        cn.script.process(cn.p)
        cn_forward = vars(unet)["forward"]
        with controlnet.controlnet_frames(cn.p, types.SimpleNamespace(settings=settings)) as control:
            with video_patches(sd_model, module, video, sdpa_attention), control.tag_frames(), torch.no_grad():
                outs.append(unet(x, t, context=ctx) if batched else torch.cat(
                    [unet(x[:FRAMES], t[:FRAMES], context=ctx[:FRAMES]),
                     unet(x[FRAMES:], t[FRAMES:], context=ctx[FRAMES:])]))
        assert vars(unet)["forward"] is cn_forward
        controlnet.restore_units(cn.p)
    assert torch.equal(outs[0], outs[1])
    frames_seen = {int(t - 100) % FRAMES: h for timesteps, seen in cn.script.calls for (_, hs, _) in seen
                   for t, h in zip(timesteps, hs)}
    assert frames_seen == {0: 1.0, 1: 1.0, 2: 0.0, 3: 0.0, 4: 1.0, 5: 0.0}
    assert not any(isinstance(m, type(module)) for m in unet.modules())  # motion module removed again


def snapshot(params):
    return [dict(vars(param)) for param in params]


def same_objects(params, saved):
    return all(vars(p).keys() == s.keys() and all(vars(p)[k] is s[k] for k in s) for p, s in zip(params, saved))


@pytest.mark.parametrize("fail_on_call", [None, 2])
def test_controlnet_state_is_restored_by_identity_after_the_run(cn, fail_on_call):
    settings = video_settings(FRAMES, keyframe(0, "red", canny(1.0, 2)), keyframe(5, "blue", canny(0.5, 0)))
    before = cn.p.script_args
    controlnet.install_units(cn.p, settings)
    cn.script.fail_on_call = fail_on_call
    original_process = cn.script.process

    def process(p):
        original_process(p)
        cn.saved = snapshot(cn.script.latest_network.control_params)
    cn.script.process = process
    if fail_on_call is None:
        run_sampling(cn, settings)
    else:
        with pytest.raises(RuntimeError, match="ControlNet failed mid-run"):
            run_sampling(cn, settings)
    params = cn.script.latest_network.control_params
    assert same_objects(params, cn.saved)
    controlnet.restore_units(cn.p)  # CCDM's postprocess (or the route's context manager)
    assert cn.p.script_args is before


def test_error_before_sampling_leaves_everything_as_it_was(cn):
    settings = video_settings(FRAMES, keyframe(0, "red", canny(1.0, 2)))
    controlnet.install_units(cn.p, settings)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_sampling(cn, settings, fail="interrupted")
    assert cn.script.calls == [] and all(p.hint_cond.shape == (1, 3, 2, 2)
                                         for p in cn.script.latest_network.control_params)


def test_controlnet_that_prepared_nothing_is_reported_before_sampling(cn):
    settings = video_settings(FRAMES, keyframe(0, "red", canny()))
    controlnet.install_units(cn.p, settings)
    cn.script.latest_network = types.SimpleNamespace(control_params=None)  # its process() failed (and was logged)
    with pytest.raises(CCDMSettingsError, match="ControlNet did not prepare the condition of the keyframes at frames"):
        with controlnet.controlnet_frames(cn.p, types.SimpleNamespace(settings=settings)):
            pass
    assert "forward" not in vars(cn.unet)


def test_attention_injection_controls_are_refused_before_sampling(cn):
    settings = video_settings(FRAMES, keyframe(0, "red", canny()))
    controlnet.install_units(cn.p, settings)
    cn.script.process(cn.p)
    cn.script.latest_network.control_params[0].control_model_type = types.SimpleNamespace(name="AttentionInjection")
    forward = vars(cn.unet)["forward"]
    with pytest.raises(CCDMSettingsError, match="is a AttentionInjection control, which cannot be given per frame"):
        with controlnet.controlnet_frames(cn.p, types.SimpleNamespace(settings=settings)):
            pass
    assert vars(cn.unet)["forward"] is forward


def test_user_units_keep_applying_to_every_frame(cn):
    settings = video_settings(FRAMES, keyframe(0, "green", canny(1.0, 0)))
    args = list(cn.p.script_args)
    args[3] = FakeUnit(module="canny", model="control_v11p_sd15_canny [d14c016b]", weight=0.25,
                       image=np.full((4, 4, 3), 255, np.uint8))  # the user's own unit: white, weight 0.25
    cn.p.script_args = tuple(args)
    controlnet.install_units(cn.p, settings)
    out = run_sampling(cn, settings, context=(6, 0))
    assert per_frame(out) == pytest.approx([0.25] * (2 * FRAMES))  # green's channel 0 is 0: only the user's unit


# ---------------------------------------------------------------- Send to ControlNet

def test_send_to_controlnet_payload(cn):
    frames = [{"frame": 3, "image": keyframe(3, "red").image, "strength": 1.0, "controlnet": canny(0.7, 2)}]
    payload = controlnet.send_to_controlnet(json.dumps(frames), 3, unit_count=3)
    assert payload["image"].startswith("data:image/png;base64,") and payload["module"] == "canny"
    assert payload["weight"] == 0.7 and payload["elem_ids"]["image"] == "txt2img_controlnet_ControlNet-0_input_image"
    assert controlnet.controlnet_unit_elem_ids("txt2img", 0, 1)["enabled"] == \
        "txt2img_controlnet_ControlNet_controlnet_enable_checkbox"
    with pytest.raises(CCDMSettingsError, match="no keyframe with an image at frame 4"):
        controlnet.send_to_controlnet(frames, 4, unit_count=3)
