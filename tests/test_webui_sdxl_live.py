"""SDXL on a live WebUI 1.6.0 started with an SDXL(-structure) checkpoint and SDXL motion modules listed
(`CCDM_WEBUI_URL=... make test-webui`; skipped when the loaded checkpoint is SD1.x): clips from the route, the
always-on script (API and the txt2img accordion in a browser) and the txt2vid tab with each SDXL module kind, keyframe
prompts (SDXL's dict conditioning), SD1.x modules refused by name, txt2img bit-identical after."""
from __future__ import annotations

import json

import numpy as np
import pytest

from test_webui_live import SIZE, STEPS, URL, call, pixels, txt2img
from test_webui_tab_v2v_live import webui_page

pytestmark = [pytest.mark.webui, pytest.mark.skipif(not URL, reason="set CCDM_WEBUI_URL to a live WebUI 1.6.0")]
FRAMES = 4


@pytest.fixture(scope="module")
def listing():
    status, body = call("/ccdm/v1/motion-modules")
    assert status == 200, body
    if body.get("checkpoint_base") != "sdxl":
        pytest.skip("the loaded checkpoint is not SDXL")
    return body


def _label(listing, fmt):
    found = [m["label"] for m in listing["modules"] if m["format"] == fmt]
    if not found:
        pytest.skip(f"no {fmt} module listed")
    return found[0]


def _clip(module, **extra):
    body = {"prompt": "a red ball on grass", "seed": 3, "steps": STEPS, "width": SIZE, "height": SIZE,
            "sampler_name": "Euler a", "motion_module": module, "frames": FRAMES, "context_length": FRAMES,
            "context_overlap": 1, "formats": ["gif"], "return_frames": True, **extra}
    return call("/ccdm/v1/txt2vid", body)


def test_the_listing_marks_what_fits_the_sdxl_checkpoint(listing):
    for module in listing["modules"]:
        assert module["fits"] == (module["base"] == "sdxl"), module
    assert {"animatediff-sdxl", "hotshot-xl"} <= {m["format"] for m in listing["modules"] if m["fits"]}


@pytest.mark.parametrize("fmt", ["animatediff-sdxl", "hotshot-xl"])
def test_route_and_script_make_sdxl_clips(listing, fmt):
    module = _label(listing, fmt)
    status, result = _clip(module)
    assert status == 200, result
    assert result["frames"] == FRAMES and f"CCDM motion module: {module}" in result["info"]
    settings = {"enabled": True, "motion_module": module, "frames": FRAMES, "context_length": FRAMES,
                "context_overlap": 1, "formats": ["gif"]}
    status, body = txt2img(batch_size=1, alwayson_scripts={"CCDM": {"args": [settings]}})
    assert status == 200, body
    assert len(body["images"]) == FRAMES
    assert json.loads(body["info"])["extra_generation_params"]["CCDM frames"] == FRAMES


def test_keyframe_prompts_interpolate_sdxls_conditioning(listing):
    module = _label(listing, "animatediff-sdxl")
    status, plain = _clip(module)
    assert status == 200, plain
    status, keyed = _clip(module, keyframes=[{"frame": FRAMES - 1, "prompt": "a blue cube in snow"}])
    assert status == 200, keyed
    a, b = pixels(plain["images"]), pixels(keyed["images"])
    assert not np.array_equal(a[-1], b[-1])  # the last frame follows the keyframe prompt


def test_sd1_modules_are_refused_by_name_and_txt2img_is_unchanged_after(listing):
    sd1 = [m["label"] for m in listing["modules"] if m["base"] == "sd1"]
    status, baseline = txt2img()
    assert status == 200
    reference = pixels(baseline["images"])
    if sd1:
        status, body = _clip(sd1[0])
        assert status == 422 and body["detail"].startswith("motion_module:") and "made for SD1.x" in body["detail"]
        status, body = txt2img(alwayson_scripts={"CCDM": {"args": [{"enabled": True, "motion_module": sd1[0]}]}})
        assert status == 422 and "made for SD1.x" in json.dumps(body)
    for fmt in ("animatediff-sdxl", "hotshot-xl"):
        assert _clip(_label(listing, fmt))[0] == 200
    status, after = txt2img()
    assert status == 200 and all(np.array_equal(x, y) for x, y in zip(reference, pixels(after["images"])))


@pytest.fixture(scope="module")
def page():
    yield from webui_page(None, height=2200)  # starts on txt2img


def _number(page, selector: str, value) -> None:
    page.fill(f"{selector} input[type=number]", str(value))
    page.press(f"{selector} input[type=number]", "Enter")


def _pick(page, selector: str, text: str) -> None:
    page.click(f"{selector} input")
    page.click(f"{selector} li:has-text('{text}')")


def test_the_txt2img_accordion_and_the_tab_make_sdxl_clips(listing, page):
    kinds = [_label(listing, "hotshot-xl"), _label(listing, "animatediff-sdxl")]
    # the accordion of txt2img, with each module kind
    acc = "#script_txt2img_ccdm_ccdm"
    page.fill("#txt2img_prompt textarea", "a red ball on grass")
    for elem, value in (("#txt2img_width", SIZE), ("#txt2img_height", SIZE), ("#txt2img_steps", STEPS)):
        _number(page, elem, value)
    page.click(f"{acc} .label-wrap")
    page.check(f"{acc}_enabled input")
    for elem, value in (("frames", FRAMES), ("context_length", FRAMES), ("context_overlap", 1)):
        _number(page, f"{acc}_{elem}", value)
    for module in kinds:
        _pick(page, f"{acc}_motion_module", module.split(" [")[0])
        page.click("#txt2img_generate")
        page.wait_for_function("document.querySelector('#html_info_txt2img').innerText.includes("
                               f"'CCDM motion module: {module}')", timeout=600000)
        assert f"CCDM frames: {FRAMES}" in page.inner_text("#html_info_txt2img")
    # the txt2vid tab, with each module kind
    tab = "#ccdm_txt2vid"
    page.get_by_role("button", name="txt2vid", exact=True).click()
    sd1 = [m["label"] for m in listing["modules"] if m["base"] == "sd1"]
    if sd1:  # a refresh names the modules that do not fit the loaded checkpoint (they stay listed)
        page.click(f"{tab}_refresh")
        page.wait_for_selector(f"{tab}_missing:has-text('Not for the loaded SDXL checkpoint')", timeout=120000)
        assert sd1[0] in page.inner_text(f"{tab}_missing")
    page.fill(f"{tab}_prompt textarea", "a red ball on grass")
    for elem, value in (("width", SIZE), ("height", SIZE), ("steps", STEPS), ("frames", FRAMES),
                        ("context_length", FRAMES), ("context_overlap", 1)):
        _number(page, f"{tab}_{elem}", value)
    for module in kinds:
        _pick(page, f"{tab}_motion_module", module.split(" [")[0])
        page.click(f"{tab}_generate")
        page.wait_for_function(f"document.querySelector('{tab}_infotext textarea').value.includes("
                               f"'CCDM motion module: {module}')", timeout=600000)
