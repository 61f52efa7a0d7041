"""The always-on script's hook chain against a stand-in `modules` package (tests/webui_fakes) and a real tiny ldm
UNet: disabled = no effect, enabled = patches only during p.sample, errors surface from p.sample as HTTP-422-style
errors with the UNet untouched and nothing written, an error mid-run leaves the next run unaffected."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ccdm_core import new_motion_module, save_motion_module
from ccdm_core.cross_frame import self_attention_layers
from ccdm_core.inject import TemporalSlot
from ccdm_core.webui import entry
from ccdm_core.video import read_infotext
from ccdm_core.webui.settings import CCDMSettings, CCDMSettingsError
from conftest import make_unet, randomize_, unet_inputs
from test_webui_unet import FakeSDModel, assert_restored, snapshot

FAKES = Path(__file__).resolve().parent / "webui_fakes"
FRAMES = 6


@pytest.fixture(scope="module")
def sd_and_module():
    unet = make_unet()
    return FakeSDModel(unet), randomize_(new_motion_module(unet, "animatediff-v2", max_frames=8), seed=3, scale=0.05)


@pytest.fixture
def webui(tmp_path, monkeypatch, sd_and_module):
    """Fake WebUI modules rooted at tmp_path, a motion module in models/ccdm, fresh CCDM caches."""
    sd_model, module = sd_and_module
    monkeypatch.setenv("CCDM_FAKE_WEBUI_ROOT", str(tmp_path))
    monkeypatch.syspath_prepend(str(FAKES))
    _drop_fake_modules()
    from modules import shared

    from ccdm_core.webui import runtime
    sha = save_motion_module(module, tmp_path / "models" / "ccdm" / "tiny_v2.safetensors")
    shared.sd_model = sd_model
    runtime._entries, runtime._loaded, runtime._formats = None, {}, {}
    yield types.SimpleNamespace(root=tmp_path, sha=sha, sd_model=sd_model, shared=shared, runtime=runtime,
                                unet=sd_model.model.diffusion_model)
    runtime._entries, runtime._loaded, runtime._formats = None, {}, {}
    _drop_fake_modules()


def _drop_fake_modules():
    for name in [n for n in sys.modules if n == "modules" or n.startswith("modules.")]:
        del sys.modules[name]


def test_motion_folders_list_animatediff_only_when_installed(webui):
    from ccdm_core.webui import env

    ccdm = str(webui.root / "models" / "ccdm")
    assert env.motion_folders() == [ccdm]
    (webui.root / "extensions" / "sd-webui-animatediff").mkdir(parents=True)
    assert env.motion_folders() == [ccdm, str(webui.root / "extensions" / "sd-webui-animatediff" / "model")]


class FakeP:
    """The parts of StableDiffusionProcessing the script touches; `sample` calls the UNet like the CFG denoiser."""

    sampler = None

    def __init__(self, sd_model, outdir, fail=False, batch_cond_uncond=True):
        self.sd_model, self.outpath_samples, self.fail = sd_model, str(outdir), fail
        self.batch_cond_uncond = batch_cond_uncond
        self.batch_size, self.n_iter, self.prompt, self.all_prompts = 1, 1, "a cat", None
        self.extra_generation_params, self.init_images, self.sampler_name = {}, None, "Euler a"
        self.width = self.height = 64  # unet_inputs' 8x8 latents
        self.seen = {}

    def sample(self, conditioning=None, unconditional_conditioning=None, seeds=None, subseeds=None,
               subseed_strength=0.0, prompts=None):
        f, unet = self.batch_size, self.sd_model.model.diffusion_model
        x, t, ctx = unet_inputs(frames=f, videos=2)
        params = types.SimpleNamespace(x=x, image_cond=None, sigma=t, sampling_step=0, total_sampling_steps=4,
                                       text_cond=ctx[:f], text_uncond=ctx[f:])
        entry.on_cfg_denoiser(params)  # what CFGDenoiser does before the UNet
        ctx = torch.cat([params.text_cond, params.text_uncond])
        with torch.no_grad():
            if self.batch_cond_uncond:
                out = unet(x, t, context=ctx)
            else:
                out = torch.cat([unet(x[:f], t[:f], context=ctx[:f]), unet(x[f:], t[f:], context=ctx[f:])])
        self.seen = {"alphas": self.sd_model.alphas_cumprod,
                     "slots": any(isinstance(m, TemporalSlot) for m in unet.modules()), "unet_out": out,
                     "cross_frame": any("forward" in vars(layer) for layer in self_attention_layers(unet))}
        params = types.SimpleNamespace(x=out, sampling_step=0, total_sampling_steps=4)
        entry.on_cfg_after_cfg(params)  # what CFGDenoiser does after CFG (here on both videos)
        out = self.seen["out"] = params.x
        if self.fail:
            raise RuntimeError("boom mid-run")
        return out[:f]


def run_script(p, settings, img2img=False):
    """process_images' order: before_process, process, p.sample (per batch), postprocess."""
    from ccdm_core.webui.script import CCDMScript

    script = CCDMScript()
    script.is_img2img, script.is_txt2img = img2img, not img2img
    script.before_process(p, settings)
    script.process(p, settings)
    p.all_seeds = [7 + i for i in range(p.batch_size)]
    latents = p.sample()
    images = [Image.fromarray(np.full((16, 16, 3), 10 * i, np.uint8)) for i in range(p.batch_size)]
    processed = types.SimpleNamespace(images=images, infotexts=[f"a cat\nSeed: {7 + i}" for i in range(len(images))],
                                      info="a cat\nSeed: 7", seed=7, index_of_first_image=0, comments="")
    script.postprocess(p, processed, settings)
    return latents, processed


def enabled(**kw):
    return {"enabled": True, "frames": FRAMES, "context_length": 4, "context_overlap": 2, **kw}


def test_disabled_script_has_no_effect(webui):
    bare = FakeP(webui.sd_model, webui.root / "out")
    bare.all_seeds = [7]
    reference = bare.sample()
    for settings in (None, CCDMSettings().to_dict(), {"enabled": False, "frames": 40}):
        p = FakeP(webui.sd_model, webui.root / "out")
        latents, processed = run_script(p, settings)
        assert p.batch_size == 1 and "sample" not in vars(p) and "_ccdm_run" not in vars(p)
        assert p.extra_generation_params == {} and processed.comments == ""
        assert torch.equal(latents, reference)
    assert not (webui.root / "out").exists()


def test_enabled_run_patches_only_during_sampling_and_writes_the_clip(webui):
    from modules import hashes
    snap = snapshot(webui.sd_model)
    p = FakeP(webui.sd_model, webui.root / "out")
    run_script(p, enabled(formats=["mp4", "gif"]))
    assert p.batch_size == FRAMES and not torch.equal(p.seen["alphas"], snap[2]) and p.seen["slots"]
    assert_restored(webui.sd_model, snap)
    label = f"tiny_v2 [{webui.sha[:10]}]"
    assert p.extra_generation_params == {"CCDM motion module": label, "CCDM frames": FRAMES, "CCDM fps": "8",
                                         "CCDM context": "4/2", "CCDM fusion": "0.5/0.5/temporal"}
    assert p.seen["cross_frame"] and not any("forward" in vars(m) for m in self_attention_layers(webui.unet))
    assert "ccdm/tiny_v2" in hashes.titles
    written = sorted(path.name for path in (webui.root / "out").rglob("*") if path.is_file())
    assert written == ["00000-7.gif", "00000-7.mp4", "00000-7.txt"]
    mp4 = next((webui.root / "out").rglob("*.mp4"))
    assert mp4.parent.parent == webui.root / "out" and read_infotext(mp4) == "a cat\nSeed: 7"


def test_batched_and_split_cfg_give_the_same_run(webui):
    a, b = FakeP(webui.sd_model, webui.root / "a"), FakeP(webui.sd_model, webui.root / "b", batch_cond_uncond=False)
    run_script(a, enabled())
    run_script(b, enabled())
    assert torch.equal(a.seen["out"], b.seen["out"])


@pytest.mark.parametrize("settings,field", [(enabled(motion_module="nope"), "motion_module"),
                                            (enabled(motion_module="ffffffffff"), "motion_module"),
                                            (enabled(context_length=12, frames=12), "context_length"),
                                            ({"enabled": True, "frames": 0}, "frames"),
                                            ({"enabled": True, "colour": "red"}, "colour"),
                                            (enabled(camera="sideways"), "camera"),
                                            (enabled(camera_strength=1.5), "camera_strength"),
                                            ([True, "x"], "settings")])
def test_bad_input_fails_from_sample_with_the_field_and_touches_nothing(webui, settings, field):
    snap = snapshot(webui.sd_model)
    p = FakeP(webui.sd_model, webui.root / "out")
    with pytest.raises(CCDMSettingsError) as info:
        run_script(p, settings)
    assert info.value.field == field and info.value.status_code == 422
    assert p.seen == {} and not (webui.root / "out").exists()
    assert_restored(webui.sd_model, snap)


def test_and_prompts_and_several_init_images_are_refused(webui):
    p = FakeP(webui.sd_model, webui.root / "out")
    p.prompt = "a cat AND a dog"
    with pytest.raises(CCDMSettingsError, match="AND"):
        run_script(p, enabled())
    p = FakeP(webui.sd_model, webui.root / "out")
    p.init_images = [Image.new("RGB", (8, 8))] * 2
    with pytest.raises(CCDMSettingsError, match="one init image"):
        run_script(p, enabled(), img2img=True)


@pytest.mark.parametrize("query", ["tiny_v2", "tiny_v2.safetensors", "SHA", "SHORT", "renamed [SHORT]"])
def test_module_selected_by_name_file_or_hash(webui, query):
    query = query.replace("SHORT", webui.sha[:10]).replace("SHA", webui.sha)
    from ccdm_core.webui import script
    p = FakeP(webui.sd_model, webui.root / "out")
    script.before_process(p, enabled(motion_module=query), False)
    script.process(p)  # selection, loading and the fit check happen here, before sampling
    assert p._ccdm_run.error is None
    assert p.extra_generation_params["CCDM motion module"] == f"tiny_v2 [{webui.sha[:10]}]"


def test_error_mid_run_leaves_the_next_run_unaffected(webui):
    snap = snapshot(webui.sd_model)
    first = FakeP(webui.sd_model, webui.root / "a")
    run_script(first, enabled())
    with pytest.raises(RuntimeError, match="boom mid-run"):
        run_script(FakeP(webui.sd_model, webui.root / "b", fail=True), enabled())
    assert_restored(webui.sd_model, snap)
    again = FakeP(webui.sd_model, webui.root / "c")
    run_script(again, enabled())
    assert torch.equal(first.seen["out"], again.seen["out"])
    bare = FakeP(webui.sd_model, webui.root / "d")
    run_script(bare, None)
    unet = webui.sd_model.model.diffusion_model
    x, t, ctx = unet_inputs(frames=1, videos=2)
    with torch.no_grad():
        assert torch.equal(bare.seen["out"], unet(x, t, context=ctx))


def test_module_released_unless_kept(webui):
    from modules import shared
    run_script(FakeP(webui.sd_model, webui.root / "a"), enabled())
    assert len(webui.runtime._loaded) == 1
    shared.opts.data["ccdm_keep_module_in_memory"] = False
    run_script(FakeP(webui.sd_model, webui.root / "b"), enabled())
    assert webui.runtime._loaded == {}


def test_img2img_first_frame_is_the_init_latent_during_sampling(webui):
    from ccdm_core.webui import runtime
    p = types.SimpleNamespace(init_latent=torch.randn(FRAMES, 4, 8, 8), mask=None, nmask=None)
    run = runtime.VideoRun(CCDMSettings(enabled=True, frames=FRAMES), is_img2img=True)
    with runtime._first_frame_keyframe(p, run):
        assert p.mask.shape == (FRAMES, 4, 8, 8) and torch.equal(p.mask[0], torch.ones(4, 8, 8))
        assert not p.mask[1:].any() and torch.equal(p.nmask, 1 - p.mask)
    assert p.mask is None and p.nmask is None


def test_callbacks_registered_and_unload_restores(webui):
    from modules import script_callbacks

    from ccdm_core.webui import entry
    from ccdm_core.webui.patches import active_runs, video_patches
    entry.register_callbacks()
    assert set(script_callbacks.registered) == {"ui_tabs", "ui_settings", "app_started", "script_unloaded",
                                                "cfg_denoiser", "cfg_after_cfg"}
    module = webui.runtime.load_module(webui.runtime.select_module(""), torch.device("cpu"), torch.float32)
    snap = snapshot(webui.sd_model)
    from ccdm_core.attention import sdpa_attention
    leftover = video_patches(webui.sd_model, module, CCDMSettings(enabled=True, frames=4), sdpa_attention)
    leftover.__enter__()
    assert active_runs() == 1
    script_callbacks.registered["script_unloaded"][0]()
    assert_restored(webui.sd_model, snap) and webui.runtime._loaded == {}


# ---------------------------------------------------------------- fusion, cross-frame, keyframes (issue 4)


def test_strengths_zero_leave_the_run_bit_identical_to_before(webui):
    from test_webui_unet import _reference_patches
    p = FakeP(webui.sd_model, webui.root / "out")
    run_script(p, enabled(fusion_strength=0.0, cross_frame_strength=0.0))
    settings = CCDMSettings.from_dict(enabled())
    module = webui.runtime.load_module(webui.runtime.select_module(""), torch.device("cpu"), torch.float32)
    x, t, ctx = unet_inputs(frames=FRAMES, videos=2)
    with torch.no_grad(), _reference_patches(webui.sd_model, module, settings):
        reference = webui.unet(x, t, context=ctx)
    assert not p.seen["cross_frame"] and torch.equal(p.seen["out"], reference)
    assert p.extra_generation_params["CCDM fusion"] == "0/0/temporal"
    on = FakeP(webui.sd_model, webui.root / "on")
    run_script(on, enabled())
    assert on.seen["cross_frame"] and not torch.equal(on.seen["unet_out"], reference)
    assert not torch.equal(on.seen["out"], on.seen["unet_out"])  # fusion acted after CFG


def test_cross_frame_patch_restored_after_an_error_mid_run(webui):
    snap = snapshot(webui.sd_model)
    p = FakeP(webui.sd_model, webui.root / "out", fail=True)
    with pytest.raises(RuntimeError, match="boom mid-run"):
        run_script(p, enabled())
    assert p.seen["cross_frame"]
    assert_restored(webui.sd_model, snap)
    from ccdm_core.webui.guidance import current_guidance
    assert current_guidance() is None


def test_keyframes_are_encoded_once_with_the_webui_vae_and_pin_their_frames(webui, monkeypatch):
    import base64
    import io
    calls = []

    def encode_first_stage(pixels):
        calls.append(tuple(pixels.shape))
        return torch.nn.functional.avg_pool2d(pixels, 8).repeat(1, 2, 1, 1)[:, :4]

    monkeypatch.setattr(webui.sd_model, "encode_first_stage", encode_first_stage, raising=False)
    monkeypatch.setattr(webui.sd_model, "get_first_stage_encoding", lambda z: z * 0.5, raising=False)
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(buffer, format="PNG")
    image = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    p = FakeP(webui.sd_model, webui.root / "out")
    run_script(p, enabled(fusion_strength=0.0, cross_frame_strength=0.0,
                          keyframes=[{"frame": 2, "image": image, "strength": 1.0}]))
    assert calls == [(1, 3, 64, 64)] and p.extra_generation_params["CCDM keyframes"] == "2:(1)"
    out, unet_out = p.seen["out"], p.seen["unet_out"]
    pinned = torch.full((4, 8, 8), 0.5)
    for video in range(2):
        assert torch.allclose(out[video * FRAMES + 2], pinned)
        others = [video * FRAMES + i for i in range(FRAMES) if i != 2]
        assert torch.equal(out[others], unet_out[others])
    from ccdm_core.webui.guidance import current_guidance
    assert current_guidance() is None


def test_bad_keyframe_image_fails_from_sample_naming_the_field(webui, monkeypatch):
    monkeypatch.setattr(webui.sd_model, "encode_first_stage", lambda x: x, raising=False)
    monkeypatch.setattr(webui.sd_model, "get_first_stage_encoding", lambda z: z, raising=False)
    snap = snapshot(webui.sd_model)
    p = FakeP(webui.sd_model, webui.root / "out")
    with pytest.raises(CCDMSettingsError) as info:
        run_script(p, enabled(keyframes=[{"frame": 1, "image": "data:image/png;base64,bm90IGFuIGltYWdl"}]))
    assert info.value.field == "keyframes" and p.seen == {}
    assert_restored(webui.sd_model, snap)


def test_timestep_samplers_get_guidance_on_the_clean_latent_their_noise_prediction_implies(webui):
    from ccdm_core.webui.guidance import eps_to_x0, guide_denoised
    p = FakeP(webui.sd_model, webui.root / "out")
    p.sampler_name = "DDIM"  # WebUI 1.6.0: its after-CFG value is eps, not the clean latent
    run_script(p, enabled())
    assert p.seen["cross_frame"] and not torch.equal(p.seen["out"], p.seen["unet_out"])
    x, _, _ = unet_inputs(frames=FRAMES, videos=2)
    alpha = p.seen["alphas"][500].double()  # the run's (swapped) schedule at FakeP's timestep
    x0 = eps_to_x0(x.double(), p.seen["unet_out"].double(), alpha).float()
    guided = guide_denoised(x0, 0, 4, p._ccdm_run.guidance)
    assert torch.allclose(eps_to_x0(x.double(), p.seen["out"].double(), alpha).float(), guided, atol=1e-5)


# ---------------------------------------------------------------- camera-move guidance


def _frames_of(out: torch.Tensor) -> torch.Tensor:
    from einops import rearrange
    return rearrange(out, "(b f) c h w -> b c f h w", f=FRAMES)


@pytest.mark.parametrize("prompt,settings,move,entry", [
    ("a cat, camera pans left", {}, "pan left", "pan left 1"),  # auto reads the run's prompt
    ("a cat", {"camera": "zoom-in", "camera_strength": 0.5}, "zoom in", "zoom in 0.5"),
])
def test_camera_move_guides_the_run_and_is_written_to_the_infotext(webui, prompt, settings, move, entry):
    from ccdm_core.feedback import guide_clip
    from ccdm_core.fusion import FusionSettings
    p = FakeP(webui.sd_model, webui.root / "out")
    p.prompt = prompt
    run_script(p, enabled(fusion_strength=0.0, cross_frame_strength=0.0, **settings))
    assert p.extra_generation_params["CCDM camera"] == entry
    g = p._ccdm_run.guidance
    assert (g.camera, g.camera_strength) == (move, float(entry.split()[-1]))
    expected = guide_clip(_frames_of(p.seen["unet_out"]), 0, 4, FusionSettings(strength=0.0), {}, {}, None, 0.6,
                          move, g.camera_strength)
    assert torch.equal(_frames_of(p.seen["out"]), expected)  # both videos, each from its own frame 0
    assert not torch.equal(p.seen["out"], p.seen["unet_out"])


def test_camera_off_leaves_the_run_as_without_it(webui):
    outs = []
    for prompt, settings in (("a cat, camera pans left", {"camera": "none"}),
                             ("a cat, camera pans left", {"camera_strength": 0.0}), ("a cat", {})):
        p = FakeP(webui.sd_model, webui.root / "out")
        p.prompt = prompt
        run_script(p, enabled(fusion_strength=0.0, cross_frame_strength=0.0, **settings))
        assert "CCDM camera" not in p.extra_generation_params and p._ccdm_run.guidance.does_nothing()
        assert torch.equal(p.seen["out"], p.seen["unet_out"])
        outs.append(p.seen["out"])
    assert all(torch.equal(out, outs[0]) for out in outs)


def test_camera_auto_reads_the_first_prompt_of_the_run(webui):
    p = FakeP(webui.sd_model, webui.root / "out")
    p.prompt = ["a cat, camera tilts down", "a cat, camera zooms out"]
    p.all_prompts = ["a cat, camera tilts up (style)"] * FRAMES  # WebUI 1.6.0: filled, styles applied, first
    run_script(p, enabled())
    assert p.extra_generation_params["CCDM camera"] == "tilt up 1" and p._ccdm_run.guidance.camera == "tilt up"
