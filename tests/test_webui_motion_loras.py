"""Motion LoRAs in the WebUI: named in the settings, found in models/ccdm/lora, merged into the (cached) motion
module only while p.sample runs and put back by identity, in the infotext; unknown or unfitting ones refused by
name before anything runs."""
from __future__ import annotations

import torch

from ccdm_core import new_motion_module
from ccdm_core.tensorfile import write_safetensors
from ccdm_core.webui.settings import CCDMSettingsError
from conftest import make_unet, randomize_
from test_motion_lora import lora_state
from test_webui_script import FakeP, enabled, run_script, webui, sd_and_module  # noqa: F401  (fixtures)


def _module_storage(webui):
    module = next(iter(webui.runtime._loaded.values()))
    return module, {n: (p.data_ptr(), p.data.clone()) for n, p in module.named_parameters()}


def test_a_named_motion_lora_changes_the_run_and_the_module_comes_back(webui, sd_and_module):
    _, module = sd_and_module
    write_safetensors(lora_state(module, rank=2), webui.root / "models" / "ccdm" / "lora" / "v2_lora_ZoomIn.safetensors",
                      {})
    plain = FakeP(webui.sd_model, webui.root / "a")
    run_script(plain, enabled())
    p = FakeP(webui.sd_model, webui.root / "b")
    run_script(p, enabled(motion_loras=[{"name": "v2_lora_ZoomIn", "strength": 0.5}]))
    assert not torch.equal(plain.seen["unet_out"], p.seen["unet_out"])
    assert p.extra_generation_params["CCDM motion LoRAs"].startswith("v2_lora_ZoomIn [")
    cached, storage = _module_storage(webui)
    again = FakeP(webui.sd_model, webui.root / "c")
    run_script(again, enabled())  # the cached module was put back: the same clip as without the LoRA
    assert torch.equal(plain.seen["unet_out"], again.seen["unet_out"])
    for name, param in cached.named_parameters():
        assert param.data_ptr() == storage[name][0] and torch.equal(param.data, storage[name][1])


def test_unknown_or_unfitting_loras_are_refused_by_name(webui):
    other = randomize_(new_motion_module(make_unet(model_channels=64), "animatediff-v2", max_frames=8), seed=2)
    write_safetensors(lora_state(other), webui.root / "models" / "ccdm" / "lora" / "wide.safetensors", {})
    for name, words in (("missing", "no motion LoRA 'missing'"), ("wide", "does not fit this motion module")):
        p = FakeP(webui.sd_model, webui.root / name)
        try:
            run_script(p, enabled(motion_loras=[{"name": name, "strength": 1}]))
        except CCDMSettingsError as err:
            assert err.field == "motion_loras" and words in str(err)
        else:
            raise AssertionError("not refused")
        assert not (webui.root / name).exists()
