"""Video to video in the WebUI: the source of a run (API base64 or UI upload) read at the run's size, as img2img's
init images, its options in the infotext, its audio kept, its temporary file removed; bad sources named."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ccdm_core.video import _ffmpeg_exe
from ccdm_core.webui.settings import CCDMSettings, CCDMSettingsError
from media import data_url, tone_video
from test_webui_script import FakeP, webui, sd_and_module  # noqa: F401  (fixtures)

FPS, SECONDS = 8, 3


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    """A 3 s test-pattern video at 8 fps (24 frames) with a tone track."""
    return tone_video(tmp_path_factory.mktemp("v2v") / "tone.mp4", 48, 32, FPS, SECONDS)


def audio_lines(path: Path):
    log = subprocess.run([_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True,
                         text=True).stderr
    return [line for line in log.splitlines() if "Audio:" in line]


def test_an_api_source_gives_frames_and_fps_and_its_file_is_removed(webui, tone):
    from ccdm_core.webui import video_source

    settings = CCDMSettings.from_dict({"enabled": True, "source_video": data_url(tone), "source_stride": 2})
    assert (settings.frames, settings.fps) == (0, 0)  # left to the source
    resolved, source = video_source.read_run_source(settings, 64, 48)
    assert (resolved.frames, resolved.fps) == (12, FPS / 2)
    assert source.clip.frames.shape == (12, 48, 64, 3) and source.clip.indices == tuple(range(0, 24, 2))
    assert source.path.is_file() and source.clip.has_audio
    source.close()
    assert not source.path.exists() and video_source.close_leftovers() == 0


@pytest.mark.parametrize("fields, field", [
    ({"source_video": "data:video/mp4;base64,AAAA", "frames": 4}, "source_video"),  # not a video
    ({"frames": 30}, "frames"),  # more than the source gives
    ({"source_start": 40}, "source_start"),  # past the end
])
def test_bad_sources_name_their_field_and_leave_nothing(webui, tone, tmp_path, fields, field):
    from ccdm_core.webui import video_source

    settings = CCDMSettings.from_dict({"enabled": True, "source_video": data_url(tone), **fields})
    with pytest.raises(CCDMSettingsError) as info:
        video_source.read_run_source(settings, 64, 48)
    assert info.value.field == field and info.value.status_code == 422
    assert video_source.close_leftovers() == 0


@pytest.mark.parametrize("fields, field", [({"frames": 0}, "frames"), ({"fps": 0}, "fps")])
def test_counts_from_the_source_need_a_source(webui, fields, field):
    from ccdm_core.webui import video_source

    with pytest.raises(CCDMSettingsError) as info:
        video_source.read_run_source(CCDMSettings.from_dict({"enabled": True, **fields}), 64, 64)
    assert info.value.field == field


def _script(img2img: bool):
    from ccdm_core.webui.script import CCDMScript

    script = CCDMScript()
    script.is_img2img, script.is_txt2img = img2img, not img2img
    return script


def test_img2img_takes_one_init_image_per_source_frame_and_keeps_the_audio(webui, tone):
    import types

    import numpy as np
    from PIL import Image

    from ccdm_core.webui import video_source

    p = FakeP(webui.sd_model, webui.root / "out")
    p.init_images, p.denoising_strength = [Image.new("RGB", (64, 64))], 0.45
    settings = {"enabled": True, "frames": 6, "context_length": 4, "context_overlap": 2, "source_start": 3,
                "formats": ["mp4"]}
    script = _script(img2img=True)
    script.before_process(p, settings, str(tone))  # the accordion's upload: a file the WebUI saved
    script.process(p, settings)
    assert p.batch_size == 6 and len(p.init_images) == 6
    assert {im.size for im in p.init_images} == {(64, 64)}
    run = p._ccdm_run
    assert np.array_equal(np.asarray(p.init_images[0]), run.source.clip.frames[0])
    assert p.extra_generation_params["CCDM source"] == f"{run.source.clip.sha256[:10]} 3/1/6"
    assert p.extra_generation_params["Denoising strength"] == "0.45"
    p.all_seeds = [7 + i for i in range(6)]
    p.sample()
    images = [Image.fromarray(np.full((16, 16, 3), 10 * i, np.uint8)) for i in range(6)]
    processed = types.SimpleNamespace(images=images, infotexts=["a cat"] * 6, info="a cat", seed=7,
                                      index_of_first_image=0, comments="")
    script.postprocess(p, processed, settings)
    mp4 = next((webui.root / "out").rglob("*.mp4"))
    assert len(audio_lines(mp4)) == 1  # the source's tone, the part frames 3..8 cover
    assert not audio_lines(tone) == []
    assert video_source.close_leftovers() == 0  # an uploaded file is the WebUI's: never removed, nothing open


def test_txt2img_without_controlnet_refuses_a_source_by_name(webui, tone):
    from ccdm_core.webui import video_source

    p = FakeP(webui.sd_model, webui.root / "out")
    settings = {"enabled": True, "frames": 4, "context_length": 4, "context_overlap": 2, "source_video": data_url(tone)}
    script = _script(img2img=False)
    script.before_process(p, settings)
    script.process(p, settings)
    with pytest.raises(CCDMSettingsError) as info:
        p.sample()
    assert info.value.field == "source_video" and "ControlNet" in str(info.value)
    assert not (webui.root / "out").exists()
    assert video_source.close_leftovers() == 1  # what the next run's before_process removes


def test_the_preview_shows_what_a_run_will_take(tone):
    from ccdm_core.webui.source_ui import PREVIEW_SIZE, preview_source

    text, thumbs = preview_source(str(tone), 2, 3, 0, "pad")
    assert text.startswith("<p>8 frames at 2.66667 fps (source frames 2..23; source 48x32 at 8 fps, with audio")
    assert [t.shape for t in thumbs] == [(PREVIEW_SIZE, PREVIEW_SIZE, 3)] * 2
    assert not thumbs[0][:20].any()  # pad: a 3:2 source in a square has black bars above and below
    text, thumbs = preview_source(str(tone), 30, 1, 0, "crop")
    assert "source_start" in text and thumbs == []
    assert preview_source(None, 0, 1, 0, "crop") == ("", [])


def test_each_clip_gets_a_consistency_report_in_the_comments_and_as_json(webui, tone):
    import json

    from test_webui_script import enabled, run_script

    webui.shared.opts.ccdm_report_json = True
    p = FakeP(webui.sd_model, webui.root / "out")
    _, processed = run_script(p, enabled(formats=["gif"]))
    run = p._ccdm_run
    assert len(run.reports) == 1 and run.reports[0]["frames"] == 6
    assert f"CCDM report: {run.reports[0]['frames']} frames at 8 fps" in processed.comments
    saved = json.loads(next((webui.root / "out").rglob("*.report.json")).read_text())
    assert saved == run.reports[0]
    webui.shared.opts.ccdm_report, webui.shared.opts.ccdm_report_json = False, False
    p = FakeP(webui.sd_model, webui.root / "off")
    _, processed = run_script(p, enabled(formats=["gif"]))
    assert p._ccdm_run.reports == [None] and "CCDM report" not in processed.comments


def test_the_api_answer_has_the_report_and_its_pairs_when_asked():
    import types

    from ccdm_core.webui.api import txt2vid_response
    from ccdm_core.webui.settings import Txt2VidRequest

    report = {"frames": 4, "warp_error": 1.5, "per_frame": {"warp_error": [1, 2, 1.5]}}
    result = types.SimpleNamespace(clips=[], images=[], info="", seed=1, interrupted=False, report=report)
    body = txt2vid_response(Txt2VidRequest.from_dict({"prompt": "x"}), result)
    assert body["report"] == {"frames": 4, "warp_error": 1.5}
    body = txt2vid_response(Txt2VidRequest.from_dict({"prompt": "x", "report_per_frame": True}), result)
    assert body["report"] == report


def test_a_new_upload_takes_all_frames_and_previews_them(tone):
    from ccdm_core.webui.source_ui import preview_new_upload

    frames, text, thumbs = preview_new_upload(str(tone), 0, 1, "crop")
    assert frames == 0 and text.startswith("<p>24 frames at 8 fps") and len(thumbs) == 2
