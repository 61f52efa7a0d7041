"""Motion LoRAs and the LCM sampler on a live WebUI 1.6.0 (`CCDM_WEBUI_URL=... make test-webui`): LCM is in the
WebUI's sampler list, makes images in txt2img and a clip in 6 steps; a motion LoRA (from the motion-LoRA route's
listing: models/ccdm/lora, or a motion LoRA file in models/Lora) changes a clip through the settings field and
through a `<lora:NAME:W>` tag, and the next run without it is bit-identical to one before it (the module restored)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from test_webui_live import SIZE, STEPS, URL, call, module_name, pixels, txt2img  # noqa: F401  (fixture)

pytestmark = [pytest.mark.webui, pytest.mark.skipif(not URL, reason="set CCDM_WEBUI_URL to a live WebUI 1.6.0")]
FRAMES = 4


@pytest.fixture(scope="module")
def lora_names():
    status, body = call("/ccdm/v1/motion-loras")
    assert status == 200, body
    if not body["loras"]:
        pytest.skip(f"no motion LoRA in {body['folders']}")
    return body["loras"]


def _clip(module_name, **extra):
    body = {"prompt": "a red ball on grass", "seed": 3, "steps": STEPS, "width": SIZE, "height": SIZE,
            "sampler_name": "Euler a", "motion_module": module_name, "frames": FRAMES, "context_length": FRAMES,
            "context_overlap": 1, "formats": ["gif"], "return_frames": True, "camera": "none", **extra}
    status, result = call("/ccdm/v1/txt2vid", body)
    assert status == 200, result
    return pixels(result["images"]), result["info"]


def _script(module_name, prompt="a red ball on grass", **settings):
    args = {"enabled": True, "motion_module": module_name, "frames": FRAMES, "context_length": FRAMES,
            "context_overlap": 1, "formats": ["gif"], "camera": "none", **settings}
    status, body = txt2img(prompt=prompt, batch_size=1, seed=5, alwayson_scripts={"CCDM": {"args": [args]}})
    assert status == 200, body
    return pixels(body["images"][:FRAMES]), json.loads(body["info"])["extra_generation_params"]


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_lcm_is_listed_and_samples_txt2img():
    status, samplers = call("/sdapi/v1/samplers")
    assert status == 200 and "LCM" in [s["name"] for s in samplers]
    status, body = txt2img(sampler_name="LCM", steps=6, cfg_scale=1.5, batch_size=1)
    assert status == 200, body
    assert "Sampler: LCM" in json.loads(body["info"])["infotexts"][0]


def test_lcm_makes_a_clip_in_6_steps(module_name):
    frames, info = _clip(module_name, sampler_name="LCM", steps=6, cfg_scale=1.5)
    assert len(frames) == FRAMES and "Sampler: LCM" in info and "Steps: 6" in info
    again, _ = _clip(module_name, sampler_name="LCM", steps=6, cfg_scale=1.5)
    assert _same(frames, again)  # deterministic per seed
    status, body = call("/ccdm/v1/txt2vid", {"prompt": "x", "sampler_name": "LCM", "steps": 60,
                                             "motion_module": module_name, "frames": FRAMES,
                                             "context_length": FRAMES, "context_overlap": 1, "width": SIZE,
                                             "height": SIZE})
    assert status == 422 and body["detail"].startswith("steps:"), body


def test_a_motion_lora_in_the_settings_changes_the_clip_and_the_module_comes_back(module_name, lora_names):
    plain, _ = _clip(module_name)
    for name in lora_names:  # each layout the folders hold
        merged, info = _clip(module_name, motion_loras=[{"name": name, "strength": 1.0}])
        assert not _same(plain, merged), name
        assert f'CCDM motion LoRAs: "{name} [' in info  # quoted by the WebUI (the value has a colon)
    after, _ = _clip(module_name)
    assert _same(plain, after)  # the cached module is bit-exact again
    plain, _ = _script(module_name)
    merged, params = _script(module_name, motion_loras=[{"name": lora_names[0], "strength": 0.8}])
    assert not _same(plain, merged) and params["CCDM motion LoRAs"].startswith(f"{lora_names[0]} [")
    status, body = txt2img(batch_size=1, alwayson_scripts={"CCDM": {"args": [{
        "enabled": True, "motion_module": module_name, "frames": FRAMES,
        "motion_loras": [{"name": "no-such-lora", "strength": 1}]}]}})
    assert status == 422 and "motion_loras" in json.dumps(body)


def test_a_prompt_tag_is_the_same_merge_and_is_hidden_from_the_webuis_lora_extension(module_name, lora_names):
    name = lora_names[-1]
    named, _ = _script(module_name, motion_loras=[{"name": name, "strength": 0.7}])
    tagged, params = _script(module_name, prompt=f"a red ball on grass <lora:{name}:0.7>")
    # the same pixels: the tag reached neither the text encoder nor the Lora extension, and merged the same LoRA
    assert _same(named, tagged)
    assert params["CCDM motion LoRA tags"].startswith(f"{name} [") and "CCDM motion LoRAs" not in params
    plain, _ = _script(module_name)
    assert not _same(plain, tagged)
