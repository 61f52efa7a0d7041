"""`ccdm generate --video`: init frames from a source video with the standalone engine, its audio kept, bad
sources refused with exit 2 naming the option, nothing written."""
from __future__ import annotations

import json
import subprocess

import pytest

from ccdm_core.cli import main
from ccdm_core.video import _ffmpeg_exe, read_infotext, read_video
from media import tone_video

FAST = ["--prompt", "a flower", "--steps", "2", "--seed", "5", "--quiet"]
FPS, SECONDS = 8, 2


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    """A 2 s test-pattern video at 8 fps (16 frames) with a tone track."""
    return tone_video(tmp_path_factory.mktemp("cli-v2v") / "dance.mp4", 96, 64, FPS, SECONDS)


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def audio_seconds(path):
    log = subprocess.run([_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:a", "-f", "null",
                          "-"], capture_output=True, text=True).stderr
    times = [line.split("time=")[1].split()[0] for line in log.splitlines() if "time=" in line]
    h, m, s = times[-1].split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_video_to_video_takes_the_source_frames_fps_and_audio(tmp_path, capsys, tone):
    out_path = tmp_path / "v2v.mp4"
    code, out, err = run_cli(capsys, "generate", *FAST, "--video", str(tone), "--strength", "0.5",
                             "--source-start", "2", "--source-stride", "2", "--out", str(out_path))
    assert code == 0, err
    line = json.loads(out.strip().splitlines()[-1])
    assert line["frames"] == 7 and line["fps"] == FPS / 2 and line["audio"] is True  # frames 2, 4, .., 14
    assert line["source"].endswith(" 2/2/7")
    frames, fps = read_video(out_path)
    assert frames.shape[0] == 7 and fps == pytest.approx(FPS / 2, rel=0.02)
    assert audio_seconds(out_path) == pytest.approx(7 * 2 / FPS, abs=0.1)
    info = read_infotext(out_path)
    assert f"CCDM source: {line['source']}" in info and "Denoising strength: 0.5" in info
    assert "CCDM camera" not in info  # camera guidance is off by default for a source


def test_strength_0_returns_the_source_through_the_vae_and_no_audio_asked(tmp_path, capsys, tone):
    out_path = tmp_path / "v.gif"
    code, out, err = run_cli(capsys, "generate", *FAST, "--video", str(tone), "--strength", "0", "--frames", "3",
                             "--no-audio", "--out", str(out_path))
    assert code == 0, err
    line = json.loads(out)
    assert line["frames"] == 3 and line["audio"] is False


@pytest.mark.parametrize("extra, words", [
    (["--video", "missing.mp4"], "source_video"),
    (["--video", "{tone}", "--frames", "40"], "frames 40"),
    (["--video", "{tone}", "--source-start", "99"], "source_start"),
    (["--video", "{tone}", "--source-stride", "0"], "source_stride"),
    (["--video", "{tone}", "--strength", "1.5"], "denoising_strength"),
    (["--source-start", "3"], "--source-start needs --video"),
])
def test_bad_sources_exit_2_naming_the_option_and_write_nothing(tmp_path, capsys, tone, extra, words):
    extra = [a.replace("{tone}", str(tone)) for a in extra]
    code, out, err = run_cli(capsys, "generate", *FAST, *extra, "--out", str(tmp_path / "clip.mp4"))
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []
