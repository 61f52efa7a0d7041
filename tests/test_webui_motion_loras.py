"""Motion LoRAs in the WebUI: named in the settings, found in models/ccdm/lora, merged into the (cached) motion
module only while p.sample runs and put back by identity, in the infotext; unknown or unfitting ones refused by
name before anything runs."""
from __future__ import annotations

import pytest
import torch

from ccdm_core import new_motion_module
from ccdm_core.tensorfile import write_safetensors
from ccdm_core.webui.settings import CCDMSettingsError
from conftest import make_unet, randomize_
from test_motion_lora import lora_state
from test_webui_script import FRAMES, FakeP, enabled, run_script, webui, sd_and_module  # noqa: F401  (fixtures)


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


class TaggedP(FakeP):
    """FakeP with 1.6.0's prompt flow: all_prompts set up before the scripts' process, then per batch p.prompts
    and parse_extra_network_prompts (which hands every <name:...> tag to its extra network, here recorded)."""

    def __init__(self, sd_model, outdir, prompt):
        super().__init__(sd_model, outdir)
        self.prompt, self.all_prompts, self.prompts = prompt, None, None
        self.networks_seen = []

    def parse_extra_network_prompts(self):
        import re

        tag = re.compile(r"<(\w+):([^>]+)>")
        self.networks_seen += [m.group(2).split(":")[0] for text in self.prompts for m in tag.finditer(text)]
        self.prompts = [tag.sub("", text) for text in self.prompts]


def run_tagged(p, settings):
    from ccdm_core.webui.script import CCDMScript

    script = CCDMScript()
    script.is_img2img, script.is_txt2img = False, True
    script.before_process(p, settings)
    p.all_prompts = [p.prompt] * p.batch_size  # setup_prompts, before process()
    script.process(p, settings)
    p.prompts = list(p.all_prompts)  # the batch's prompts, then the extra networks
    p.parse_extra_network_prompts()
    p.all_seeds = [7 + i for i in range(p.batch_size)]
    return p.sample()


def _zoom_in(webui, module, folder=("models", "ccdm", "lora")):
    path = webui.root.joinpath(*folder, "v2_lora_ZoomIn.safetensors")
    write_safetensors(lora_state(module, rank=2), path, {})
    return path


def test_a_prompt_tag_applies_the_motion_lora_and_the_webui_lora_extension_never_sees_it(webui, sd_and_module):
    _, module = sd_and_module
    _zoom_in(webui, module)
    named = FakeP(webui.sd_model, webui.root / "a")
    run_script(named, enabled(motion_loras=[{"name": "v2_lora_ZoomIn", "strength": 0.5}]))
    p = TaggedP(webui.sd_model, webui.root / "b", "a cat <lora:v2_lora_ZoomIn:0.5> <lora:style:0.7>")
    run_tagged(p, enabled())
    assert torch.equal(p.seen["unet_out"], named.seen["unet_out"])  # the same merge as the settings field
    assert p.networks_seen == ["style"] * FRAMES  # the image LoRA is left to the WebUI, the motion LoRA is not there
    assert all("<lora:v2_lora_ZoomIn:0.5>" in text for text in p.all_prompts)  # the infotext's prompt keeps it
    assert p.extra_generation_params["CCDM motion LoRA tags"].startswith("v2_lora_ZoomIn [")
    assert "CCDM motion LoRAs" not in p.extra_generation_params  # pasting the prompt brings the tag back
    plain = TaggedP(webui.sd_model, webui.root / "c", "a cat <lora:style:0.7>")
    run_tagged(plain, enabled())
    assert not torch.equal(plain.seen["unet_out"], p.seen["unet_out"])
    assert plain.networks_seen == ["style"] * FRAMES and "CCDM motion LoRA tags" not in plain.extra_generation_params


def test_models_lora_files_are_taken_only_when_they_are_motion_loras(webui, sd_and_module):
    _, module = sd_and_module
    _zoom_in(webui, module, ("models", "Lora"))
    image_lora = {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 8),
                  "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(8, 2)}
    write_safetensors(image_lora, webui.root / "models" / "Lora" / "style.safetensors", {})
    p = TaggedP(webui.sd_model, webui.root / "b", "a cat <lora:v2_lora_ZoomIn> <lora:style:0.7>")
    run_tagged(p, enabled())
    assert p.networks_seen == ["style"] * FRAMES
    assert p.extra_generation_params["CCDM motion LoRA tags"].endswith(":1")  # no strength: 1


def test_prompt_tags_that_conflict_are_refused_by_name(webui, sd_and_module):
    _, module = sd_and_module
    _zoom_in(webui, module)
    cases = [("a <lora:v2_lora_ZoomIn:0.5>", {"motion_loras": [{"name": "v2_lora_ZoomIn", "strength": 1}]},
              "motion_loras", "both a <lora:...> tag"),
             ("a <lora:v2_lora_ZoomIn:0.5>, b <lora:v2_lora_ZoomIn:0.8>", {}, "prompt", "strengths 0.5 and 0.8"),
             ("a <lora:v2_lora_ZoomIn:9>", {}, "prompt", "strength must be a number in -2..2"),
             ("a <lora:v2_lora_ZoomIn:lots>", {}, "prompt", "cannot read the strength 'lots'")]
    for prompt, extra, field, words in cases:
        p = TaggedP(webui.sd_model, webui.root / "x", prompt)
        with pytest.raises(CCDMSettingsError) as err:
            run_tagged(p, enabled(**extra))
        assert err.value.field == field and words in str(err.value), (prompt, str(err.value))
        assert not (webui.root / "x").exists()


def test_tag_strength_reads_the_webuis_multipliers():
    from ccdm_core.webui.motion_loras import strip_tags, tag_strength

    assert [tag_strength(a) for a in ("", ":0.8", ":0.5:0.9", ":te=0.3:unet=0.6", ":te=0.4")] == [1, 0.8, 0.9, 0.6,
                                                                                                 0.4]
    assert strip_tags("a <lora:Zoom:1> b <lora:style:0.5>", {"Zoom"}) == "a  b <lora:style:0.5>"


def test_the_multi_select_and_its_strengths_become_the_settings_field():
    from ccdm_core.webui.motion_lora_ui import lora_values
    from ccdm_core.webui.settings import CCDMSettings

    values = {"motion_lora_names": ["zoom", "pan"], "motion_lora_strengths": "0.5"}
    assert lora_values(values) == {"motion_loras": [{"name": "zoom", "strength": 0.5},
                                                    {"name": "pan", "strength": 1.0}]} and values == {}
    assert lora_values({"motion_lora_names": [], "motion_lora_strengths": ""}) == {"motion_loras": []}
    with pytest.raises(CCDMSettingsError) as err:
        lora_values({"motion_lora_names": ["zoom"], "motion_lora_strengths": "1, 2"})
    assert err.value.field == "motion_loras" and "2 strengths for 1 motion LoRAs" in str(err.value)
    with pytest.raises(CCDMSettingsError) as err:
        CCDMSettings.from_dict(lora_values({"motion_lora_names": ["zoom"], "motion_lora_strengths": "lots"}))
    assert err.value.field == "motion_loras"


def test_camera_guidance_yields_to_a_motion_lora_that_makes_the_prompts_move(webui, sd_and_module):
    _, module = sd_and_module
    _zoom_in(webui, module)
    write_safetensors(lora_state(module, rank=2, seed=4), webui.root / "models" / "ccdm" / "lora" /
                      "v2_lora_PanLeft.safetensors", {})
    runs = {}
    for key, prompt, option in (("zoom", "a cat, camera zooms in <lora:v2_lora_ZoomIn:1>", None),
                                ("other move", "a cat, camera zooms in <lora:v2_lora_PanLeft:1>", None),
                                ("option", "a cat, camera zooms in <lora:v2_lora_ZoomIn:1>", 0.3)):
        webui.shared.opts.data["ccdm_camera_strength_with_lora"] = option
        p = TaggedP(webui.sd_model, webui.root / key, prompt)
        run_tagged(p, enabled())
        runs[key] = (p._ccdm_run.guidance, p.extra_generation_params)
    guidance, params = runs["zoom"]
    assert not guidance.camera_acts() and params["CCDM camera from LoRA"] == "v2_lora_ZoomIn"
    assert "CCDM camera" not in params
    guidance, params = runs["other move"]
    assert guidance.camera_acts() and params["CCDM camera"] == "zoom in 1" and "CCDM camera from LoRA" not in params
    guidance, params = runs["option"]
    assert guidance.camera_strength == 0.3 and params["CCDM camera"] == "zoom in 0.3"
