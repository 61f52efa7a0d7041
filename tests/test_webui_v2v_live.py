"""Video to video against a live WebUI 1.6.0 with this extension (`CCDM_WEBUI_URL=... make test-webui`): the
txt2vid route with `source_video`, img2img's always-on script with a source, bad sources answered 422 by field,
and, when sd-webui-controlnet 1.1.4xx is installed, a ControlNet unit without an image fed frame by frame."""
from __future__ import annotations

import base64

import numpy as np
import pytest

from media import data_url, tone_video
from test_webui_live import SIZE, STEPS, URL, call, module_name, pixels  # noqa: F401 (fixture)

pytestmark = [pytest.mark.webui, pytest.mark.skipif(not URL, reason="set CCDM_WEBUI_URL to a live WebUI 1.6.0")]
FRAMES = 6


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 12-frame test pattern (moving bars, 8 fps) with a tone track, as a data URL."""
    return data_url(tone_video(tmp_path_factory.mktemp("live-v2v") / "source.mp4", SIZE, SIZE, 8, 1.5))


@pytest.fixture(scope="module")
def motion(module_name):
    return module_name


def txt2vid(motion, **extra):
    body = {"prompt": "a painting", "seed": 5, "steps": STEPS, "width": SIZE, "height": SIZE,
            "sampler_name": "Euler a", "motion_module": motion, "context_length": FRAMES, "context_overlap": 2,
            "formats": ["mp4"], "return_frames": True, **extra}
    return call("/ccdm/v1/txt2vid", body)


def test_txt2vid_route_takes_a_source_video(motion, source):
    status, body = txt2vid(motion, source_video=source, frames=FRAMES, source_stride=2, denoising_strength=0.5)
    assert status == 200, body
    assert body["frames"] == FRAMES and "CCDM source: " in body["info"] and " 0/2/6" in body["info"]
    assert "Denoising strength: 0.5" in body["info"]
    frames = pixels(body["images"])
    assert len(frames) == FRAMES and frames[0].shape == (SIZE, SIZE, 3)


def test_strength_0_returns_the_source_through_the_vae(motion, source):
    status, body = txt2vid(motion, source_video=source, frames=FRAMES, denoising_strength=0.0)
    assert status == 200, body
    first = pixels(body["images"])[0].astype(float)
    status, other = txt2vid(motion, source_video=source, frames=FRAMES, denoising_strength=0.9)
    assert status == 200, other
    assert np.abs(first - pixels(other["images"])[0]).mean() > 1.0  # the strength acts


@pytest.mark.parametrize("fields, field", [
    ({"source_video": "/etc/passwd"}, "source_video"),
    ({"source_video": "data:video/mp4;base64,AAAA"}, "source_video"),
    ({"frames": 99}, "frames"),
    ({"source_start": 500}, "source_start"),
])
def test_bad_sources_get_422_naming_the_field(motion, source, fields, field):
    status, body = txt2vid(motion, **{"source_video": source, **fields})
    assert status == 422 and body["detail"].startswith(f"{field}"), body


def test_img2img_script_with_a_source_makes_one_init_per_frame(motion, source):
    settings = {"enabled": True, "motion_module": motion, "frames": FRAMES, "context_length": FRAMES,
                "context_overlap": 2, "source_video": source}
    blank = "data:image/png;base64," + base64.b64encode(_png(SIZE)).decode()
    body = {"prompt": "a painting", "seed": 5, "steps": STEPS, "width": SIZE, "height": SIZE,
            "sampler_name": "Euler a", "denoising_strength": 0.4, "init_images": [blank],
            "alwayson_scripts": {"CCDM": {"args": [settings]}}}
    status, out = call("/sdapi/v1/img2img", body)
    assert status == 200, out
    assert len(out["images"]) == FRAMES and "CCDM source: " in out["info"]


def _png(size: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), "grey").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def controlnet_model():
    status, _ = call("/controlnet/version")
    if status != 200:
        pytest.skip("sd-webui-controlnet is not installed on this WebUI")
    status, models = call("/controlnet/model_list")
    sd15 = [m for m in (models or {}).get("model_list", []) if "sd15" in m.lower()]
    if not sd15:
        pytest.skip("no SD1.5 ControlNet model in ControlNet's model list")
    return sd15[0]


def test_a_controlnet_unit_without_an_image_is_fed_by_the_source(motion, source, controlnet_model):
    settings = {"enabled": True, "motion_module": motion, "frames": FRAMES, "context_length": FRAMES,
                "context_overlap": 2, "source_video": source}
    unit = {"enabled": True, "module": "canny", "model": controlnet_model, "weight": 1.0, "pixel_perfect": True}

    def run(units):
        body = {"prompt": "a painting", "seed": 5, "steps": STEPS, "width": SIZE, "height": SIZE,
                "sampler_name": "Euler a", "alwayson_scripts": {"CCDM": {"args": [settings]},
                                                                "ControlNet": {"args": units}}}
        return call("/sdapi/v1/txt2img", body)

    status, fed = run([unit])
    assert status == 200, fed
    frames = pixels(fed["images"][:FRAMES])
    assert len(frames) == FRAMES and "CCDM source: " in fed["info"]
    status, off = run([{**unit, "enabled": False}])
    assert status == 422 and "source_video" in str(off)  # txt2img: a source needs a unit to feed
