"""Round trips, atomic writes and input checks of ccdm_core.video on small synthetic clips."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ccdm_core import video
from ccdm_core.errors import CCDMError
from ccdm_core.video import FORMATS, read_infotext, read_video, save_frames_png, tensor_to_frames, write_video

INFOTEXT = 'a "cat", café: x=1; #tag \\ 100%\nNegative prompt: blurry, \'low\'\nSteps: 20, Sampler: DDIM'
# Mean absolute error allowed per format (0..255 scale); png is lossless.
TOLERANCE = {"mp4": 4.0, "webm": 5.0, "gif": 5.0, "webp": 4.0, "png": 0.0}


def make_clip(num_frames=6, height=48, width=64):
    """A colour gradient with a bright square moving right by 6 pixels per frame."""
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([xx * 3, yy * 4, 200 - xx * 2], axis=-1).clip(0, 255).astype(np.uint8)
    clip = np.repeat(background[None], num_frames, axis=0)
    for i in range(num_frames):
        clip[i, 12:28, 4 + 6 * i:20 + 6 * i] = 250
    return clip


def mean_abs_diff(a, b):
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_every_format(tmp_path, fmt):
    clip = make_clip()
    path = write_video(clip, tmp_path / f"clip.{fmt}", fps=8, infotext=INFOTEXT)
    assert path == tmp_path / f"clip.{fmt}" and files_in(tmp_path) == [f"clip.{fmt}"]
    frames, fps = read_video(path)
    assert frames.shape == clip.shape and frames.dtype == np.uint8
    assert fps == pytest.approx(8, abs=1e-6)
    assert mean_abs_diff(frames, clip) <= TOLERANCE[fmt]
    assert read_infotext(path) == INFOTEXT


@pytest.mark.parametrize("fmt", FORMATS)
def test_fractional_fps_and_no_infotext(tmp_path, fmt):
    path = write_video(make_clip(num_frames=5), tmp_path / f"clip.{fmt}", fps=12.5)
    frames, fps = read_video(path)
    assert len(frames) == 5 and fps == pytest.approx(12.5, abs=1e-6)
    assert read_infotext(path) is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_long_non_latin1_infotext(tmp_path, fmt):
    # Longer than a GIF comment sub-block (255 bytes); '猫' and '—' are outside latin-1 (PNG iTXt).
    infotext = ("猫 — masterpiece, (best quality:1.2), 'ü'\n" * 80) + "Steps: 20"
    path = write_video(make_clip(num_frames=2), tmp_path / f"clip.{fmt}", fps=8, infotext=infotext)
    assert read_infotext(path) == infotext


def test_gif_fps_that_does_not_divide_100_is_exact_on_average(tmp_path):
    # 1000/30 ms is not a whole number of centiseconds; the delays alternate 30/40 ms.
    path = write_video(make_clip(num_frames=6), tmp_path / "clip.gif", fps=30)
    frames, fps = read_video(path)
    assert len(frames) == 6 and fps == pytest.approx(30, abs=1e-6)
    assert video._durations_ms(6, 30, 10) == [30, 40, 30, 30, 40, 30]


@pytest.mark.parametrize("fmt", ["gif", "webp", "png"])
def test_repeated_frames_keep_the_frame_count(tmp_path, fmt):
    # Pillow merges identical neighbouring frames into one longer frame; read_video expands it again.
    clip = make_clip(num_frames=4)
    clip = np.concatenate([clip[:2], clip[1:2], clip[1:2], clip[2:]])
    frames, fps = read_video(write_video(clip, tmp_path / f"clip.{fmt}", fps=10))
    assert len(frames) == 6 and fps == pytest.approx(10)
    assert mean_abs_diff(frames, clip) <= TOLERANCE[fmt]


def test_mp4_pads_odd_sizes_and_webm_keeps_them(tmp_path):
    clip = make_clip(num_frames=3, height=47, width=63)
    frames, fps = read_video(write_video(clip, tmp_path / "odd.mp4", fps=8))
    assert frames.shape == (3, 48, 64, 3) and fps == 8
    assert mean_abs_diff(frames[:, :47, :63], clip) <= TOLERANCE["mp4"]
    frames, _ = read_video(write_video(clip, tmp_path / "odd.webm", fps=8))
    assert frames.shape == clip.shape


def test_single_frame_png_is_exact(tmp_path):
    clip = make_clip(num_frames=1)
    frames, fps = read_video(write_video(clip, tmp_path / "one.png", fps=8, infotext=INFOTEXT))
    np.testing.assert_array_equal(frames, clip)
    # Pillow >= 10 writes one frame as a plain PNG without frame timing; Pillow 9.5 keeps an APNG delay.
    assert fps in (8.0, video.STILL_FPS)
    assert read_infotext(tmp_path / "one.png") == INFOTEXT


def test_accepts_lists_of_arrays_and_pil_images_and_explicit_fmt(tmp_path):
    clip = make_clip(num_frames=3)
    as_images = [Image.fromarray(frame) for frame in clip]
    frames, _ = read_video(write_video(as_images, tmp_path / "sub" / "dir" / "a.PNG", fps=8, fmt="png"))
    np.testing.assert_array_equal(frames, clip)
    frames, _ = read_video(write_video(list(clip), str(tmp_path / "b.png"), fps=np.float32(8)))
    np.testing.assert_array_equal(frames, clip)


def test_overwrite_replaces_the_target(tmp_path):
    path = tmp_path / "clip.png"
    write_video(make_clip(num_frames=2), path, fps=8, infotext="old")
    write_video(make_clip(num_frames=3), path, fps=8, infotext="new")
    assert len(read_video(path)[0]) == 3 and read_infotext(path) == "new"
    assert files_in(tmp_path) == ["clip.png"]


@pytest.mark.parametrize("fmt", ["gif", "png"])
def test_failed_pillow_write_leaves_no_file_and_keeps_the_target(tmp_path, monkeypatch, fmt):
    path = tmp_path / f"clip.{fmt}"
    path.write_bytes(b"previous")

    def broken_save(self, fp, format=None, **params):
        Path(fp).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_video(make_clip(), path, fps=8)
    assert files_in(tmp_path) == [f"clip.{fmt}"] and path.read_bytes() == b"previous"


def test_failed_ffmpeg_write_leaves_no_file_and_keeps_the_target(tmp_path, monkeypatch):
    # Without padding, libx264 rejects odd sizes after ffmpeg has started on the temporary file.
    monkeypatch.setattr(video, "_pad_even", lambda frames: frames)
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"previous")
    with pytest.raises(CCDMError, match=r"cannot write .*clip\.mp4: ffmpeg \(libx264\) failed"):
        write_video(make_clip(height=47, width=63), path, fps=8)
    assert files_in(tmp_path) == ["clip.mp4"] and path.read_bytes() == b"previous"


def test_bad_frames_raise_before_anything_is_written(tmp_path):
    path = tmp_path / "clip.webp"
    path.write_bytes(b"previous")
    with pytest.raises(CCDMError, match="different shapes"):
        write_video([make_clip(1)[0], make_clip(1, height=32)[0]], path, fps=8)
    assert files_in(tmp_path) == ["clip.webp"] and path.read_bytes() == b"previous"


@pytest.mark.parametrize("frames, words", [
    (np.zeros((0, 8, 8, 3), np.uint8), "f >= 1"),
    (np.zeros((2, 0, 8, 3), np.uint8), "h >= 1"),
    ([], "empty"),
    (np.zeros((2, 8, 8), np.uint8), r"shape \(f, h, w, 3\)"),
    (np.zeros((2, 8, 8, 4), np.uint8), r"shape \(f, h, w, 3\)"),
    (np.zeros((2, 8, 8, 3), np.float32), "must be uint8"),
    ([np.zeros((8, 8, 3), np.float64)], "must be uint8"),
    ("frames", "uint8 array"),
])
def test_bad_frames(tmp_path, frames, words):
    with pytest.raises(CCDMError, match=words):
        write_video(frames, tmp_path / "clip.mp4", fps=8)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("fps", [0, -1, float("nan"), float("inf"), "8", None, True])
def test_bad_fps(tmp_path, fps):
    with pytest.raises(CCDMError, match=r"fps must be a positive finite number \(e\.g\. 8 or 12\.5\)"):
        write_video(make_clip(2), tmp_path / "clip.gif", fps=fps)


def test_bad_format_and_infotext(tmp_path):
    with pytest.raises(CCDMError, match="unknown video format 'avi'.*accepted formats: mp4, gif, webm, webp, png"):
        write_video(make_clip(2), tmp_path / "clip.avi", fps=8)
    with pytest.raises(CCDMError, match="unknown video format 'mkv'"):
        write_video(make_clip(2), tmp_path / "clip.mp4", fps=8, fmt="mkv")
    with pytest.raises(CCDMError, match="format 'gif' does not match the extension of clip.mp4"):
        write_video(make_clip(2), tmp_path / "clip.mp4", fps=8, fmt="gif")
    with pytest.raises(CCDMError, match="infotext must be a str or None"):
        write_video(make_clip(2), tmp_path / "clip.png", fps=8, infotext=42)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_and_corrupt_files_name_the_file(tmp_path, fmt):
    with pytest.raises(CCDMError, match=f"not found: .*missing.{fmt}"):
        read_video(tmp_path / f"missing.{fmt}")
    bad = tmp_path / f"corrupt.{fmt}"
    bad.write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(CCDMError, match=f"corrupt.{fmt}"):
        read_video(bad)
    with pytest.raises(CCDMError, match=f"corrupt.{fmt}"):
        read_infotext(bad)


def test_truncated_file_is_an_error(tmp_path):
    path = write_video(make_clip(), tmp_path / "clip.gif", fps=8)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CCDMError, match="clip.gif"):
        read_video(path)


def test_webp_infotext_is_a_piexif_style_user_comment(tmp_path):
    exif = video._exif_user_comment("é, x")
    assert video._decode_user_comment(b"UNICODE\0" + "é, x".encode("utf-16-le")) == "é, x"
    assert video._decode_user_comment(b"ASCII\0\0\0steps: 20") == "steps: 20"
    path = write_video(make_clip(2), tmp_path / "clip.webp", fps=8, infotext="é, x")
    with Image.open(path) as im:
        assert im.getexif().get_ifd(0x8769)[0x9286] == exif[44:]


def test_parse_ffmetadata_escapes_and_sections():
    text = ';FFMETADATA1\nmajor_brand=isom\nCOMMENT=a\\=b\\; \\#c \\\\ d\\\nline two\n[STREAM]\ncomment=stream\n'
    assert video._parse_ffmetadata(text) == {"major_brand": "isom", "comment": "a=b; #c \\ d\nline two"}


def test_save_frames_png(tmp_path):
    clip = make_clip(num_frames=3)
    paths = save_frames_png(clip, tmp_path / "frames", "shot", infotext=INFOTEXT)
    assert [p.name for p in paths] == ["shot-00000.png", "shot-00001.png", "shot-00002.png"]
    assert files_in(tmp_path / "frames") == [p.name for p in paths]
    for frame, path in zip(clip, paths):
        with Image.open(path) as im:
            assert im.info["parameters"] == INFOTEXT
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")), frame)
    with pytest.raises(CCDMError, match="stem must be a non-empty file name"):
        save_frames_png(clip, tmp_path, "a/b")


def test_tensor_to_frames_layout_and_range():
    torch = pytest.importorskip("torch")
    x = torch.zeros(3, 2, 4, 5)  # c f h w
    x[0, 1, 2, 3] = 1.0  # red of frame 1, row 2, column 3
    x[2, 0] = -1.0  # blue of frame 0
    x[1, 0, 0, 0] = 5.0  # clamped
    frames = tensor_to_frames(x)
    assert frames.shape == (2, 4, 5, 3) and frames.dtype == np.uint8
    assert frames[1, 2, 3, 0] == 255 and frames[0, 0, 0, 2] == 0 and frames[0, 0, 0, 1] == 255
    assert frames[1, 0, 0, 1] == 128  # 0.0 maps to the middle grey
    np.testing.assert_array_equal(tensor_to_frames(x[None]), frames)


def test_tensor_to_frames_rejects_bad_layouts():
    torch = pytest.importorskip("torch")
    with pytest.raises(CCDMError, match="b == 1, got b=2"):
        tensor_to_frames(torch.zeros(2, 3, 2, 4, 4))
    with pytest.raises(CCDMError, match="c == 3"):
        tensor_to_frames(torch.zeros(4, 2, 4, 4))
    with pytest.raises(CCDMError, match="float torch tensor"):
        tensor_to_frames(torch.zeros(3, 2, 4, 4, dtype=torch.uint8))
