"""Video to video's ControlNet against the stand-in ControlNet 1.1.4xx of test_control_hints: every enabled unit
without an image of its own takes the source frames, one hint per frame through its own preprocessor, preprocessed
once per run, inside CCDM's real windows (2F and split batches); units with their own image keep it; keyframe
conditions still apply; the user's units and ControlNet's state come back by identity."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from ccdm_core.webui import controlnet, controlnet_source
from ccdm_core.webui.settings import CCDMSettingsError
from test_control_hints import (FRAMES, FakeControlNetScript, FakeUnit, canny, fake_external_code, keyframe,
                                per_frame, run_sampling, video_settings)
from test_control_hints import Passthrough  # noqa: F401

MODEL = "control_v11p_sd15_canny [d14c016b]"


class PreprocessingScript(FakeControlNetScript):
    """The stand-in with ControlNet's per-image path: `preprocessor[name]` and `Script.detectmap_proc`; the
    stand-in's hint is the detected map's mean colour, as its `process()` computes it for a unit's image."""

    def __init__(self):
        super().__init__()
        self.preprocessed = []
        self.preprocessor = {"canny": self._canny, "depth_midas": self._canny}

    def _canny(self, image, res=None, thr_a=None, thr_b=None):
        self.preprocessed.append(res)
        return np.asarray(image), True

    @staticmethod
    def detectmap_proc(detected_map, module, resize_mode, h, w):
        colour = torch.tensor(np.asarray(detected_map, dtype=np.float32).mean(axis=(0, 1)) / 255.0)
        return colour.view(1, 3, 1, 1).expand(1, 3, 2, 2).clone(), detected_map


def source_frames(count=FRAMES):
    """Frame n is a flat colour whose red channel is n / (count - 1): its hint's channel 0 names the frame."""
    frames = np.zeros((count, 8, 8, 3), np.uint8)
    for n in range(count):
        frames[n, ..., 0] = round(255 * n / (count - 1))
    return frames


@pytest.fixture
def cn(monkeypatch):
    import sys

    script = PreprocessingScript()
    monkeypatch.setitem(sys.modules, controlnet.EXTERNAL_CODE, fake_external_code(script))
    unet = Passthrough()
    runner = types.SimpleNamespace(alwayson_scripts=[script])
    user = FakeUnit(module="canny", model=MODEL, weight=0.5)  # enabled, no image: the source feeds it
    p = types.SimpleNamespace(scripts=runner, script_args=("ccdm", None, user, FakeUnit(enabled=False), None,
                                                           "other"), width=8, height=8,
                              sd_model=types.SimpleNamespace(model=types.SimpleNamespace(diffusion_model=unet)))
    return types.SimpleNamespace(script=script, unet=unet, p=p, user=user)


def expected_hints(weight):
    return [weight * round(255 * n / (FRAMES - 1)) / 255 for n in range(FRAMES)]


def test_units_without_an_image_are_fed_frame_0_and_put_back(cn):
    before = cn.p.script_args
    state = controlnet_source.feed_source_units(cn.p, source_frames())
    fed = cn.p.script_args[2]
    assert state.slots == [2] and fed is not cn.user and cn.user.image is None  # a copy: the user's unit untouched
    assert getattr(fed, controlnet_source.SOURCE_MARK) and np.array_equal(fed.image, source_frames()[0])
    assert cn.p.script_args[3] is before[3]  # a disabled unit is not fed
    assert controlnet_source.restore_source_units(cn.p) and cn.p.script_args is before
    assert not controlnet_source.restore_source_units(cn.p)


@pytest.mark.parametrize("batched", [True, False])
def test_each_frame_gets_its_source_frame_hint_in_every_window(cn, batched):
    settings = video_settings(FRAMES)
    controlnet_source.feed_source_units(cn.p, source_frames())
    out = run_sampling(cn, settings, batched=batched)
    assert per_frame(out) == pytest.approx(expected_hints(0.5) * 2)  # cond frames, then uncond frames
    for timesteps, seen in cn.script.calls:
        frames = [t % FRAMES for t in timesteps]
        (_, hints, weights), = seen
        assert hints == pytest.approx([n / (FRAMES - 1) for n in frames]) and weights == [0.5] * len(frames)


def test_frames_are_preprocessed_once_per_run(cn):
    settings = video_settings(FRAMES)
    controlnet_source.feed_source_units(cn.p, source_frames())
    cn.script.process(cn.p)
    run = types.SimpleNamespace(settings=settings)
    for _ in range(3):  # e.g. anchor-first's image, then the video: one preprocessing for the run
        with controlnet.controlnet_frames(cn.p, run):
            pass
    assert len(cn.script.preprocessed) == FRAMES


def test_a_unit_with_its_own_image_keeps_it_for_every_frame(cn):
    args = list(cn.p.script_args)
    args[3] = FakeUnit(module="depth_midas", model="control_v11f1p_sd15_depth [cfd03158]", weight=0.25,
                       image=np.full((4, 4, 3), 255, np.uint8))
    cn.p.script_args = tuple(args)
    own = args[3]
    controlnet_source.feed_source_units(cn.p, source_frames())
    assert cn.p.script_args[3] is own
    out = run_sampling(cn, video_settings(FRAMES))
    assert per_frame(out) == pytest.approx([h + 0.25 for h in expected_hints(0.5)] * 2)


def test_keyframe_conditions_still_take_their_frames(cn):
    settings = video_settings(FRAMES, keyframe(2, "red", canny(1.0, 0)))
    controlnet.install_units(cn.p, settings)
    controlnet_source.feed_source_units(cn.p, source_frames())
    out = per_frame(run_sampling(cn, settings))
    source = expected_hints(0.5)
    assert out == pytest.approx([h + (1.0 if n == 2 else 0.0) for n, h in enumerate(source)] * 2)


@pytest.mark.parametrize("fail", [None, "boom inside the windows"])
def test_controlnet_state_is_restored_by_identity(cn, fail):
    controlnet_source.feed_source_units(cn.p, source_frames())
    cn.script.process(cn.p)
    params = cn.script.latest_network.control_params
    saved = [dict(vars(p)) for p in params]
    cn.script.process = lambda p: None  # prepared once above
    if fail:
        with pytest.raises(RuntimeError, match=fail):
            run_sampling(cn, video_settings(FRAMES), fail=fail)
    else:
        run_sampling(cn, video_settings(FRAMES))
    for param, before in zip(params, saved):
        assert all(vars(param)[k] is v for k, v in before.items() if k in controlnet.TOUCHED)


def test_a_controlnet_without_per_image_preprocessing_is_named(cn):
    cn.script.preprocessor = {}
    controlnet_source.feed_source_units(cn.p, source_frames())
    cn.script.process(cn.p)
    with pytest.raises(CCDMSettingsError) as info:
        with controlnet.controlnet_frames(cn.p, types.SimpleNamespace(settings=video_settings(FRAMES))):
            pass
    assert info.value.field == "source_video" and "1.1.4xx" in str(info.value)
