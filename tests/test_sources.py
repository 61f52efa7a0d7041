"""Reading video-to-video sources (ccdm_core.sources) and keeping their audio (ccdm_core.audio), on tiny clips.

Frame i of a synthetic source is filled with grey level 10 + 16 * i, so the source index of every frame read
back can be decoded from its mean (codec noise is far below the 16-level step).
"""

import base64
import hashlib
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ccdm_core import audio, sources
from ccdm_core.audio import mux_source_audio
from ccdm_core.errors import CCDMError
from ccdm_core.sources import MAX_SOURCE_FRAMES, SourceOptions, fit_frame, read_source, source_from_base64
from ccdm_core.video import _ffmpeg_exe, read_infotext, read_video, write_video

N = 12  # frames in the shared sources
FPS = 8
KINDS = ["mp4", "webm", "gif", "webp", "png", "folder"]  # ffmpeg, ffmpeg, Pillow x 3, numbered PNG files
INFOTEXT = 'a "cat", café\nNegative prompt: blurry\nSteps: 20, Sampler: DDIM'
BASE64_ACCEPTED = "accepted: a data URL or base64 of a video file"


def level(i):
    return 10 + 16 * (i % 15)


def grey_clip(n, height=24, width=32):
    clip = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        clip[i] = level(i)
    return clip


def decoded_indices(frames):
    return [round((float(frame.mean()) - 10) / 16) for frame in frames]


def write_folder(clip, folder, stem="f"):
    """Frames as {stem}1.png .. {stem}N.png (natural order differs from name order past 9) plus distractors."""
    folder.mkdir()
    for i, frame in enumerate(clip):
        Image.fromarray(frame).save(folder / f"{stem}{i + 1}.png")
    (folder / "notes.txt").write_text("not a frame")
    Image.fromarray(np.full((24, 32, 3), 250, np.uint8)).save(folder / ".hidden.png")
    return folder


def pattern_clip(n=3, height=24, width=48):
    """Gradients, a 4-pixel checkerboard and a moving yellow square: any geometry error shows."""
    yy, xx = np.mgrid[0:height, 0:width]
    checker = ((xx // 4 + yy // 4) % 2) * 200 + 20
    background = np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), checker], axis=-1)
    clip = np.repeat(background.astype(np.uint8)[None], n, axis=0)
    for i in range(n):
        clip[i, 6:14, 4 + 8 * i:12 + 8 * i] = (250, 250, 0)
    return clip


def mean_abs_diff(a, b):
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def ffmpeg(*args):
    return subprocess.run([_ffmpeg_exe(), "-hide_banner", "-nostdin", *args], capture_output=True, check=False)


def ffmpeg_children():
    """ffmpeg processes (zombies included) still below this one; [] without psutil."""
    try:
        import psutil
    except ImportError:
        return []
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "ffmpeg" in child.name():
                found.append(child)
        except psutil.Error:
            pass
    return found


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """The same 12-frame grey-level clip as mp4, webm, gif, webp, png and a folder of numbered PNGs."""
    root = tmp_path_factory.mktemp("sources")
    clip = grey_clip(N)
    paths = {fmt: write_video(clip, root / f"clip.{fmt}", fps=FPS) for fmt in KINDS[:-1]}
    paths["folder"] = write_folder(clip, root / "frames")
    return paths


@pytest.fixture(scope="module")
def tone_source(tmp_path_factory):
    """A 3 s testsrc video at 8 fps with a 440 Hz tone whose amplitude 0.1 * (1 + t) encodes the time t."""
    path = tmp_path_factory.mktemp("tone") / "tone.mp4"
    proc = ffmpeg("-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=32x24:rate=8:duration=3",
                  "-f", "lavfi", "-i", "aevalsrc=exprs='0.1*(1+t)*sin(2*PI*440*t)':d=3:s=44100",
                  "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path))
    assert proc.returncode == 0, proc.stderr[-500:]
    return path


def decoded_audio(path, rate=8000):
    """The first audio stream as mono float samples at `rate` Hz."""
    proc = ffmpeg("-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(rate),
                  "-f", "s16le", "pipe:1")
    assert proc.returncode == 0, proc.stderr[-500:]
    return np.frombuffer(proc.stdout, np.int16) / 32768.0


def audio_stream_lines(path):
    log = ffmpeg("-i", str(path)).stderr.decode("utf-8", "replace")
    return [line for line in log.splitlines() if "Stream #0:" in line and ": Audio: " in line]


# ---------------------------------------------------------------- picking frames


@pytest.mark.parametrize("kind", KINDS)
def test_start_stride_and_count_pick_the_right_source_frames(src, kind):
    clip = read_source(src[kind], 16, 12, SourceOptions(source_start=1, source_stride=3, frames=3))
    assert clip.frames.shape == (3, 12, 16, 3) and clip.frames.dtype == np.uint8
    assert clip.indices == (1, 4, 7) and decoded_indices(clip.frames) == [1, 4, 7]
    assert clip.source_fps == pytest.approx(FPS) and clip.fps == pytest.approx(FPS / 3)
    assert clip.source_size == (32, 24) and clip.has_audio is False
    assert clip.start_seconds == pytest.approx(1 / FPS) and clip.duration_seconds == pytest.approx(3 * 3 / FPS)


@pytest.mark.parametrize("kind", ["mp4", "gif", "folder"])
def test_default_frames_are_all_the_source_gives_up_to_the_cap(src, kind):
    clip = read_source(src[kind], 16, 12, SourceOptions(source_start=2, source_stride=3))
    assert clip.indices == (2, 5, 8, 11) and decoded_indices(clip.frames) == [2, 5, 8, 11]
    clip = read_source(src[kind], 16, 12, SourceOptions(source_start=2, source_stride=3, max_frames=2))
    assert clip.indices == (2, 5) and decoded_indices(clip.frames) == [2, 5]
    everything = read_source(src[kind], 16, 12)
    assert everything.indices == tuple(range(N)) and decoded_indices(everything.frames) == list(range(N))
    assert everything.fps == pytest.approx(FPS) and everything.start_seconds == 0
    assert everything.duration_seconds == pytest.approx(N / FPS)


@pytest.mark.parametrize("kind", ["mp4", "webp", "folder"])
def test_more_frames_than_the_source_gives_names_frames(src, kind):
    # From source_start 3 with stride 2 the 12 frames give 3, 5, 7, 9, 11.
    with pytest.raises(CCDMError, match=r"^frames 40: the source gives only 5 frames from source_start 3 "
                                        r"with source_stride 2"):
        read_source(src[kind], 16, 12, SourceOptions(source_start=3, source_stride=2, frames=40))
    clip = read_source(src[kind], 16, 12, SourceOptions(source_start=3, source_stride=2, frames=5))
    assert decoded_indices(clip.frames) == [3, 5, 7, 9, 11]


@pytest.mark.parametrize("kind", ["mp4", "gif", "folder"])
def test_source_start_past_the_end_names_source_start_and_the_frame_count(src, kind):
    with pytest.raises(CCDMError, match=r"^source_start 12 is past the end of source_video: "
                                        r"the source has 12 frames \(accepted: 0\.\.11\)"):
        read_source(src[kind], 16, 12, SourceOptions(source_start=12))
    assert read_source(src[kind], 16, 12, SourceOptions(source_start=11)).indices == (11,)


def test_folder_frames_sort_naturally_and_take_the_given_fps(tmp_path):
    folder = write_folder(grey_clip(N), tmp_path / "frames", stem="frame_")
    clip = read_source(folder, 8, 6, folder_fps=12.5)
    assert decoded_indices(clip.frames) == list(range(N))  # frame_2 before frame_10, distractors ignored
    assert clip.fps == 12.5 and clip.source_fps == 12.5
    first = clip.sha256
    assert read_source(folder, 8, 6, SourceOptions(frames=1)).sha256 == first and len(first) == 64
    Image.fromarray(grey_clip(1)[0]).save(folder / "frame_12.png")  # change the content of the last frame
    assert read_source(folder, 8, 6).sha256 != first


def test_file_sha256_is_the_full_hash_of_the_file(src):
    for kind in ("mp4", "gif"):
        expected = hashlib.sha256(src[kind].read_bytes()).hexdigest()
        assert read_source(src[kind], 8, 6, SourceOptions(frames=1)).sha256 == expected


def test_progress_is_called_after_each_frame(src):
    for kind, total in (("mp4", 3), ("gif", 3), ("folder", 3)):
        calls = []
        read_source(src[kind], 8, 6, SourceOptions(frames=3), progress=lambda d, t: calls.append((d, t)))
        assert calls == [(1, total), (2, total), (3, total)]
    calls = []
    read_source(src["mp4"], 8, 6, SourceOptions(source_start=10), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, MAX_SOURCE_FRAMES), (2, MAX_SOURCE_FRAMES)]  # unknown count: the cap is the total


# ---------------------------------------------------------------- streaming


def test_a_long_source_is_streamed_and_ffmpeg_is_ended(tmp_path):
    path = write_video(grey_clip(200), tmp_path / "long.mp4", fps=25)
    start = time.monotonic()
    clip = read_source(path, 16, 12, SourceOptions(source_start=5, frames=3))
    assert time.monotonic() - start < 10
    assert decoded_indices(clip.frames) == [5, 6, 7] and clip.source_fps == 25
    proc = sources._last_ffmpeg
    args = proc.args
    assert args[args.index("-frames:v") + 1] == "3"  # ffmpeg itself stops after the picked frames
    assert proc.returncode is not None and proc.stdout.closed and proc.stderr.closed  # ended and reaped
    assert ffmpeg_children() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4"]  # no temporary files


def test_an_error_in_progress_stops_ffmpeg(tmp_path):
    path = write_video(grey_clip(200), tmp_path / "long.mp4", fps=25)

    def stop_at_two(done, total):
        if done == 2:
            raise KeyboardInterrupt  # e.g. the user pressed Interrupt

    with pytest.raises(KeyboardInterrupt):
        read_source(path, 16, 12, progress=stop_at_two)
    proc = sources._last_ffmpeg
    assert proc.returncode is not None and proc.stdout.closed and ffmpeg_children() == []


# ---------------------------------------------------------------- geometry


def test_wide_source_into_a_square_pads_with_bars_or_crops_the_centre(tmp_path):
    # 64x24 horizontal gradient (0 at the left edge, 255 at the right) into 32x32.
    gradient = np.repeat(np.linspace(0, 255, 64).round().astype(np.uint8)[None, :, None], 24, axis=0)
    frame = np.repeat(gradient, 3, axis=2)
    frame[..., 1] = 200  # green stays non-black everywhere in the picture
    padded = fit_frame(frame, 32, 32, "pad")  # content 32x12, bars of 10 rows above and below
    assert padded.shape == (32, 32, 3)
    assert not padded[:10].any() and not padded[22:].any() and (padded[10:22, :, 1] > 150).all()
    cropped = fit_frame(frame, 32, 32, "crop")  # scaled to 85x32, the middle 32 columns kept
    assert (cropped[..., 1] > 150).all()
    left, right = float(cropped[:, 0, 0].mean()), float(cropped[:, -1, 0].mean())
    assert left > 60 and right < 195 and left + right == pytest.approx(255, abs=6)  # centred
    for fit, expected in (("pad", padded), ("crop", cropped)):
        path = write_video(np.stack([frame, frame]), tmp_path / f"wide-{fit}.mp4", fps=FPS)
        got = read_source(path, 32, 32, SourceOptions(source_fit=fit)).frames
        assert got.shape == (2, 32, 32, 3) and mean_abs_diff(got[0], expected) < 4


def test_ffmpeg_and_pillow_paths_give_the_same_geometry(tmp_path):
    clip = pattern_clip()
    mp4 = write_video(clip, tmp_path / "pattern.mp4", fps=FPS)
    folder = tmp_path / "pattern"
    folder.mkdir()
    for i, frame in enumerate(clip):
        Image.fromarray(frame).save(folder / f"p{i}.png")
    decoded, _ = read_video(mp4)
    for width, height in ((21, 20), (30, 17), (33, 32), (64, 48)):  # 21 and 33: odd crop margins
        for fit in ("crop", "pad"):
            options = SourceOptions(source_fit=fit)
            via_ffmpeg = read_source(mp4, width, height, options).frames
            from_pngs = read_source(folder, width, height, options).frames
            assert via_ffmpeg.shape == from_pngs.shape == (3, height, width, 3)
            # The same decoded frames fitted by fit_frame: ffmpeg's scale/crop/pad differ by rounding only.
            refit = np.stack([fit_frame(f, width, height, fit) for f in decoded])
            assert mean_abs_diff(via_ffmpeg, refit) < 1.5, (width, height, fit)
            assert mean_abs_diff(via_ffmpeg, from_pngs) < 6, (width, height, fit)  # plus H.264 loss
            shifted = mean_abs_diff(via_ffmpeg[:, :, 1:], from_pngs[:, :, :-1])
            assert shifted > mean_abs_diff(via_ffmpeg, from_pngs) + 5  # a one-pixel offset would show


def test_fit_frame_checks_its_inputs():
    frame = np.zeros((4, 4, 3), np.uint8)
    np.testing.assert_array_equal(fit_frame(frame + 7, 4, 4), frame + 7)  # same size: unchanged
    with pytest.raises(CCDMError, match="^width must be an integer in 1"):
        fit_frame(frame, 0, 4)
    with pytest.raises(CCDMError, match="^source_fit must be one of crop, pad, got 'zoom'"):
        fit_frame(frame, 4, 4, "zoom")
    with pytest.raises(CCDMError, match=r"^frame must be a uint8 array \(h, w, 3\)"):
        fit_frame(np.zeros((4, 4), np.uint8), 4, 4)


# ---------------------------------------------------------------- options and bad sources


@pytest.mark.parametrize("kwargs, message", [
    ({"source_start": -1}, "source_start must be an integer >= 0, got -1"),
    ({"source_start": 1.5}, "source_start must be an integer >= 0, got 1.5"),
    ({"source_stride": 0}, r"source_stride must be an integer in 1\.\.1000, got 0"),
    ({"source_stride": 1001}, r"source_stride must be an integer in 1\.\.1000, got 1001"),
    ({"source_stride": True}, r"source_stride must be an integer in 1\.\.1000, got True"),
    ({"frames": 0}, r"frames must be None \(all the source gives\) or an integer in 1\.\.1024, got 0"),
    ({"frames": 2000}, r"frames must be None \(all the source gives\) or an integer in 1\.\.1024, got 2000"),
    ({"frames": 5, "max_frames": 4}, r"frames must be .* in 1\.\.4, got 5"),
    ({"frames": "3"}, "frames must be None"),
    ({"max_frames": 1025}, r"max_frames must be an integer in 1\.\.1024, got 1025"),
    ({"source_fit": "stretch"}, "source_fit must be one of crop, pad, got 'stretch'"),
])
def test_bad_options_name_their_field(kwargs, message):
    with pytest.raises(CCDMError, match="^" + message):
        SourceOptions(**kwargs)


def test_options_accept_numpy_integers():
    options = SourceOptions(source_start=np.int64(2), source_stride=np.int32(3), frames=np.int64(4))
    assert (options.source_start, options.source_stride, options.frames) == (2, 3, 4)
    assert type(options.source_start) is int and options.source_fit == "crop"


def test_bad_sources_name_source_video(tmp_path, src):
    with pytest.raises(CCDMError, match="^source_video not found: .*missing.mp4"):
        read_source(tmp_path / "missing.mp4", 8, 8)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(CCDMError, match="^source_video empty.mp4 is empty"):
        read_source(tmp_path / "empty.mp4", 8, 8)
    for name in ("garbage.mp4", "garbage.bin"):
        (tmp_path / name).write_bytes(b"this is not a video at all" * 20)
        with pytest.raises(CCDMError, match=f"^source_video: cannot read {name}: "):
            read_source(tmp_path / name, 8, 8)
    sound = tmp_path / "sound.m4a"
    assert ffmpeg("-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=0.2", str(sound)).returncode == 0
    with pytest.raises(CCDMError, match="^source_video: sound.m4a has no video stream"):
        read_source(sound, 8, 8)
    truncated = tmp_path / "truncated.gif"
    truncated.write_bytes(src["gif"].read_bytes()[:40])
    with pytest.raises(CCDMError, match="^source_video: "):
        read_source(truncated, 8, 8)
    (tmp_path / "no-frames").mkdir()
    (tmp_path / "no-frames" / "readme.txt").write_text("x")
    with pytest.raises(CCDMError, match="^source_video folder .*no-frames has no frame images"):
        read_source(tmp_path / "no-frames", 8, 8)


def test_sources_over_the_size_limit_are_refused_by_name(src):
    size_mb = src["mp4"].stat().st_size / 2**20
    with pytest.raises(CCDMError, match=r"^source_video is \d+\.\d MB; accepted: up to 0\.0001 MB \(setting"):
        read_source(src["mp4"], 8, 8, max_mb=0.0001)
    with pytest.raises(CCDMError, match=r"^source_video is .* MB; accepted: up to"):
        read_source(src["folder"], 8, 8, max_mb=0.0001)
    assert read_source(src["mp4"], 8, 8, SourceOptions(frames=1), max_mb=size_mb * 1.01).indices == (0,)
    with pytest.raises(CCDMError, match="^max_mb must be a positive number"):
        read_source(src["mp4"], 8, 8, max_mb=0)


# ---------------------------------------------------------------- uploads


def test_source_from_base64_round_trips_data_urls_and_plain_base64(tmp_path, src):
    data = src["mp4"].read_bytes()
    url = "data:video/mp4;base64," + base64.b64encode(data).decode()
    path = source_from_base64(url, tmp_path / "uploads")
    assert path.parent == tmp_path / "uploads" and path.suffix == ".mp4" and path.read_bytes() == data
    assert decoded_indices(read_source(path, 8, 6, SourceOptions(frames=2)).frames) == [0, 1]
    wrapped = base64.encodebytes(src["gif"].read_bytes()).decode()  # newlines every 76 characters
    other = source_from_base64("  " + wrapped + "\n", tmp_path / "uploads")
    assert other.suffix == ".gif" and other.read_bytes() == src["gif"].read_bytes() and other != path
    assert sorted(p.name for p in (tmp_path / "uploads").iterdir()) == sorted([path.name, other.name])


@pytest.mark.parametrize("head, suffix", [
    (b"\0\0\0\x20ftypisom", ".mp4"), (b"\0\0\0\x14ftypqt  ", ".mov"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", ".webm"),
    (b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska", ".mkv"),
    (b"GIF89a\x01\0", ".gif"), (b"GIF87a\x01\0", ".gif"), (b"\x89PNG\r\n\x1a\n\0", ".png"),
    (b"RIFF\x10\0\0\0WEBPVP8X", ".webp"), (b"RIFF\x10\0\0\0AVI LIST", ".avi"), (b"\0\0\x01\xba", ".bin"),
])
def test_uploads_get_the_extension_of_their_magic_bytes(tmp_path, head, suffix):
    path = source_from_base64(base64.b64encode(head + b"\0" * 16).decode(), tmp_path)
    assert path.suffix == suffix and path.read_bytes() == head + b"\0" * 16


@pytest.mark.parametrize("data", [
    "/etc/passwd", "/etc/passwd.txt", "C:\\Windows\\win.ini", "garbage!!", "", "   ", None, 42,
    b"GIF89a", "data:video/mp4,AAAA", "data:video/mp4;base64,", "QUJDA",
])
def test_source_from_base64_refuses_paths_and_garbage_by_name(tmp_path, data):
    with pytest.raises(CCDMError, match=f"^init_video .*{BASE64_ACCEPTED}"):
        source_from_base64(data, tmp_path / "uploads", field="init_video")
    assert not (tmp_path / "uploads").exists()


def test_source_from_base64_size_limit(tmp_path):
    payload = base64.b64encode(b"GIF89a" + b"\0" * 3000).decode()
    with pytest.raises(CCDMError, match=r"^source_video is 0\.0 MB; accepted: up to 0\.001 MB"):
        source_from_base64(payload, tmp_path, max_mb=0.001)
    assert source_from_base64(payload, tmp_path, max_mb=0.01).suffix == ".gif"


# ---------------------------------------------------------------- audio


def test_has_audio_only_for_files_with_an_audio_stream(src, tone_source):
    assert read_source(tone_source, 16, 12, SourceOptions(frames=2)).has_audio is True
    for kind in ("mp4", "webm", "gif", "webp", "folder"):
        assert read_source(src[kind], 16, 12, SourceOptions(frames=1)).has_audio is False


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_mux_source_audio_adds_the_span_the_clip_covers(tmp_path, tone_source, fmt):
    if audio.audio_encoder(fmt) is None:
        pytest.skip(f"the bundled ffmpeg has no {fmt} audio encoder")
    clip = read_source(tone_source, 32, 24, SourceOptions(source_start=4, frames=6))  # 0.5 s .. 1.25 s
    assert clip.start_seconds == pytest.approx(0.5) and clip.duration_seconds == pytest.approx(0.75)
    out = write_video(clip.frames, tmp_path / f"out.{fmt}", fps=clip.fps, infotext=INFOTEXT)
    frames_before, _ = read_video(out)
    assert mux_source_audio(out, tone_source, clip.start_seconds, clip.duration_seconds) is True
    assert len(audio_stream_lines(out)) == 1
    samples = decoded_audio(out)
    assert len(samples) / 8000 == pytest.approx(clip.duration_seconds, abs=0.1)
    # The tone's amplitude 0.1 * (1 + t) says where in the source the audio starts and ends.
    assert np.abs(samples[400:1200]).max() == pytest.approx(0.1 * (1 + 0.5 + 0.1), abs=0.03)
    assert np.abs(samples[-1200:-400]).max() == pytest.approx(0.1 * (1 + 1.25 - 0.1), abs=0.03)
    assert read_infotext(out) == INFOTEXT
    np.testing.assert_array_equal(read_video(out)[0], frames_before)  # the video stream was copied
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out.{fmt}"]


def test_mux_source_audio_returns_false_and_keeps_the_file(tmp_path, src, tone_source):
    out = write_video(grey_clip(4), tmp_path / "out.mp4", fps=FPS, infotext=INFOTEXT)
    original = out.read_bytes()
    assert mux_source_audio(out, src["mp4"], 0, 0.5) is False  # the source has no audio
    assert mux_source_audio(out, src["folder"], 0, 0.5) is False
    assert mux_source_audio(out, tone_source, 10.0, 0.5) is False  # the span lies past the audio's end
    gif = write_video(grey_clip(4), tmp_path / "out.gif", fps=FPS)
    gif_bytes = gif.read_bytes()
    assert mux_source_audio(gif, tone_source, 0, 0.5) is False  # no audio in gif
    assert out.read_bytes() == original and gif.read_bytes() == gif_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gif", "out.mp4"]
    with pytest.raises(CCDMError, match="^start_seconds must be a number of seconds >= 0"):
        mux_source_audio(out, tone_source, -1, 0.5)
    with pytest.raises(CCDMError, match="^duration_seconds must be a positive number of seconds"):
        mux_source_audio(out, tone_source, 0, 0)


def test_failed_mux_raises_ffmpegs_message_and_keeps_the_original(tmp_path, tone_source, monkeypatch):
    out = write_video(grey_clip(4), tmp_path / "out.mp4", fps=FPS, infotext=INFOTEXT)
    original = out.read_bytes()
    monkeypatch.setitem(audio._AUDIO_OPTIONS, "aac", ["-af", "no_such_filter"])
    with pytest.raises(CCDMError, match="^ffmpeg could not add the source audio: .*Filter not found"):
        mux_source_audio(out, tone_source, 0, 0.5)
    assert out.read_bytes() == original and sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
