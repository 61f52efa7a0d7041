"""FreeInit, frame interpolation and the consistency report against a live WebUI 1.6.0 with this extension
(`CCDM_WEBUI_URL=... make test-webui`; sizes and steps as in test_webui_live.py)."""
from __future__ import annotations

import base64

import pytest

from ccdm_core.video import read_video
from test_webui_live import SIZE, STEPS, URL, call, module_name  # noqa: F401 (fixture)

pytestmark = [pytest.mark.webui, pytest.mark.skipif(not URL, reason="set CCDM_WEBUI_URL to a live WebUI 1.6.0")]
FRAMES = 6


@pytest.fixture(scope="module")
def motion(module_name):
    return module_name


def txt2vid(motion, **extra):
    body = {"prompt": "a red ball on grass", "seed": 3, "steps": STEPS, "width": SIZE, "height": SIZE,
            "sampler_name": "Euler a", "motion_module": motion, "frames": FRAMES, "context_length": FRAMES,
            "context_overlap": 2, "formats": ["mp4"], **extra}
    return call("/ccdm/v1/txt2vid", body)


def test_freeinit_runs_more_passes_and_says_so(motion):
    status, body = txt2vid(motion, freeinit_iterations=2)
    assert status == 200, body
    assert "CCDM FreeInit: 2/butterworth/0.25/0.25/fresh" in body["info"]


def test_interpolation_writes_more_frames_at_a_higher_rate(motion, tmp_path):
    status, body = txt2vid(motion, interpolate=2, fps=8)
    assert status == 200, body
    path = tmp_path / "clip.mp4"
    path.write_bytes(base64.b64decode(body["video"]))
    frames, fps = read_video(path)
    assert len(frames) == (FRAMES - 1) * 2 + 1 and fps == pytest.approx(16, rel=0.02)
    assert "CCDM interpolate: 2" in body["info"]


def test_the_answer_has_a_consistency_report(motion):
    status, body = txt2vid(motion, report_per_frame=True)
    assert status == 200, body
    report = body["report"]
    assert report["frames"] == FRAMES and report["warp_error"] is not None
    assert len(report["per_frame"]["warp_error"]) == FRAMES - 1


def test_freeinit_with_init_images_is_refused_by_name(motion):
    settings = {"enabled": True, "motion_module": motion, "frames": FRAMES, "context_length": FRAMES,
                "context_overlap": 2, "freeinit_iterations": 2}
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), "grey").save(buffer, format="PNG")
    body = {"prompt": "a ball", "steps": STEPS, "width": SIZE, "height": SIZE, "denoising_strength": 0.5,
            "init_images": ["data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()],
            "alwayson_scripts": {"CCDM": {"args": [settings]}}}
    status, out = call("/sdapi/v1/img2img", body)
    assert status == 422 and "freeinit_iterations" in str(out), out
