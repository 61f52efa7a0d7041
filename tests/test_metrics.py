"""Video metrics on synthetic clips with known motion (crops of a real photo) and the `evaluate` command."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from ccdm_core import evaluate_cli, metrics
from ccdm_core.errors import CCDMError
from ccdm_core.video import write_video

H, W = 96, 128
DIAGONAL = float(np.hypot(H, W))  # 160


@pytest.fixture(scope="module")
def photo():
    return data.astronaut()  # 512x512 RGB, textured


def pan(photo, shift: int, frames: int = 6) -> np.ndarray:
    """Crops sliding right by `shift` px per frame: the content moves left by `shift` px per frame."""
    y0, x0 = 40, 150
    return np.stack([photo[y0:y0 + H, x0 + k * shift:x0 + k * shift + W] for k in range(frames)])


def with_flicker(frames: np.ndarray, levels: int = 10) -> np.ndarray:
    """Every other frame brighter by `levels` (clipped to 0..255)."""
    out = frames.astype(np.int16)
    out[1::2] += levels
    return np.clip(out, 0, 255).astype(np.uint8)


def evaluate_args(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ccdm")
    evaluate_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["evaluate", *argv])


# ---------------------------------------------------------------- flow-based metrics


@pytest.mark.parametrize("shift", [1, 3])
def test_known_pan_gives_accumulated_motion_and_small_warp_error(photo, shift):
    frames = pan(photo, shift)
    expected = shift * (len(frames) - 1) / DIAGONAL * 100  # accumulated over the 5 pairs
    assert metrics.motion_magnitude_pct(frames) == pytest.approx(expected, rel=0.03)
    assert metrics.warp_error(frames) < 3.0
    assert metrics.flicker_index(frames) < 0.5


def test_static_clip_scores_zero(photo):
    frames = pan(photo, 0)
    result = metrics.evaluate_frames(frames)
    assert result["motion_magnitude_pct"] == pytest.approx(0, abs=1e-3)
    assert result["warp_error"] == pytest.approx(0, abs=1e-3)
    assert result["flicker_index"] == pytest.approx(0, abs=1e-3)
    assert result["flow_valid_fraction"] == pytest.approx(1.0)


@pytest.mark.parametrize("shift", [0, 2])
def test_alternating_brightness_gives_flicker_of_its_size(photo, shift):
    steady = pan(photo, shift)
    flickering = with_flicker(steady, 10)
    assert metrics.flicker_index(steady) < 0.5
    assert metrics.flicker_index(flickering) == pytest.approx(10, abs=0.5)
    # Motion compensation keeps the pan itself out of the flicker index.
    assert metrics.motion_magnitude_pct(flickering) == pytest.approx(metrics.motion_magnitude_pct(steady), abs=0.2)


def test_evaluate_frames_shares_flows_and_matches_module_functions(photo):
    frames = with_flicker(pan(photo, 2), 6)
    flows = metrics.flow_fields(frames)
    assert flows.forward.shape == flows.backward.shape == (5, H, W, 2)
    result = metrics.evaluate_frames(frames, per_frame=True)
    assert result["motion_magnitude_pct"] == pytest.approx(metrics.motion_magnitude_pct(frames, flows), abs=1e-4)
    assert result["warp_error"] == pytest.approx(metrics.warp_error(frames, flows), abs=1e-4)
    assert result["flicker_index"] == pytest.approx(metrics.flicker_index(frames, flows), abs=1e-4)
    detail = result["per_frame"]
    assert all(len(detail[k]) == 5 for k in ("motion_pct", "warp_error", "flicker", "flow_valid_fraction"))
    assert sum(detail["motion_pct"]) == pytest.approx(result["motion_magnitude_pct"], abs=1e-3)


def test_flows_of_the_wrong_shape_are_refused(photo):
    frames = pan(photo, 1)
    with pytest.raises(CCDMError, match=r"flow of shape \(5, 96, 128, 2\)"):
        metrics.warp_error(frames, metrics.flow_fields(frames[:3]))
    with pytest.raises(CCDMError, match="backward"):
        metrics.flicker_index(frames, metrics.flow_fields(frames, backward=False))


def test_single_frame_scores_zero_with_a_note(photo):
    result = metrics.evaluate_frames(pan(photo, 0, frames=1), per_frame=True)
    assert (result["frames"], result["motion_magnitude_pct"], result["warp_error"], result["flicker_index"]) == \
        (1, 0.0, 0.0, 0.0)
    assert result["flow_valid_fraction"] is None and result["per_frame"]["motion_pct"] == []
    assert any("single frame" in note for note in result["notes"])


def test_warp_back_with_an_integer_flow_is_a_shift(photo):
    image = photo[:32, :40]
    flow = np.zeros((32, 40, 2), np.float32)
    flow[..., 0] = 3  # out(p) = image(p + (3, 0))
    np.testing.assert_array_equal(metrics.warp_back(image, flow)[:, :37], image[:, 3:].astype(np.float32))


def test_consistency_mask_keeps_agreeing_flows_inside_the_frame():
    fw = np.zeros((8, 10, 2), np.float32)
    fw[..., 0] = 2
    agreeing, disagreeing = -fw, fw.copy()
    mask = metrics.consistency_mask(fw, agreeing)
    assert mask[:, :8].all() and not mask[:, 8:].any()  # targets x + 2 > 9 leave the frame
    assert not metrics.consistency_mask(fw, disagreeing).any()  # |2 + 2|^2 = 16 > 0.01 * 8 + 0.5


def test_frames_must_be_uint8_rgb():
    with pytest.raises(CCDMError, match=r"uint8 array of shape \(f, h, w, 3\)"):
        metrics.evaluate_frames(np.zeros((2, 8, 8, 3), np.float32))


# ---------------------------------------------------------------- reference metrics


def test_identical_frames_give_ssim_1_and_infinite_psnr_as_null(photo):
    frames = pan(photo, 0, frames=3)
    assert metrics.ssim_to_reference(frames, frames[0]) == pytest.approx(1.0)
    assert metrics.psnr_to_reference(frames, frames[0]) == np.inf
    result = metrics.evaluate_frames(frames, frames[0])
    assert result["ssim_to_reference"] == pytest.approx(1.0) and result["psnr_to_reference"] is None
    assert any("infinite" in note for note in result["notes"])
    json.dumps(result, allow_nan=False)


def test_noise_lowers_ssim_and_psnr(photo):
    rng = np.random.default_rng(0)
    ref = pan(photo, 0, frames=1)[0]
    scores = []
    for sigma in (5, 20):
        noisy = np.clip(ref + rng.normal(0, sigma, (4,) + ref.shape), 0, 255).astype(np.uint8)
        scores.append((metrics.ssim_to_reference(noisy, ref), metrics.psnr_to_reference(noisy, ref)))
    (ssim_low, psnr_low), (ssim_high, psnr_high) = scores
    assert 1.0 > ssim_low > ssim_high and np.isfinite(psnr_low) and psnr_low > psnr_high
    assert psnr_low == pytest.approx(10 * np.log10(255 ** 2 / 25), abs=1.0)  # Gaussian noise, sigma 5


def test_reference_of_another_size_names_both_sizes(photo):
    frames = pan(photo, 0, frames=2)
    with pytest.raises(CCDMError, match="reference image is 64x48 but the video frames are 128x96"):
        metrics.ssim_to_reference(frames, photo[:48, :64])


# ---------------------------------------------------------------- `ccdm evaluate`


def test_evaluate_command_reports_every_metric(tmp_path, photo):
    frames = pan(photo, 2)
    write_video(frames, tmp_path / "clip.png", fps=8)
    Image.fromarray(frames[0]).save(tmp_path / "ref.png")
    out = evaluate_cli.run(evaluate_args(str(tmp_path / "clip.png"), "--reference", str(tmp_path / "ref.png")))
    assert {"frames", "motion_magnitude_pct", "warp_error", "flicker_index", "ssim_to_reference",
            "psnr_to_reference", "notes"} <= set(out) and "per_frame" not in out
    assert out["frames"] == 6 and out["fps"] == pytest.approx(8)
    assert out["motion_magnitude_pct"] == pytest.approx(2 * 5 / DIAGONAL * 100, rel=0.03)
    assert out["ssim_to_reference"] < 1.0 and out["psnr_to_reference"] is None  # frame 0 equals the reference
    json.dumps(out, allow_nan=False)


def test_evaluate_json_flag_adds_per_frame_lists(tmp_path, photo):
    write_video(pan(photo, 1, frames=4), tmp_path / "clip.png", fps=8)
    Image.fromarray(photo[100:100 + H, 100:100 + W]).save(tmp_path / "ref.png")
    out = evaluate_cli.run(evaluate_args(str(tmp_path / "clip.png"), "--reference", str(tmp_path / "ref.png"),
                                         "--json"))
    detail = out["per_frame"]
    assert len(detail["motion_pct"]) == 3 and len(detail["ssim"]) == len(detail["psnr"]) == 4
    assert "ssim_to_reference" in out and "psnr_to_reference" in out


def test_evaluate_refuses_a_reference_of_another_size(tmp_path, photo):
    write_video(pan(photo, 0, frames=2), tmp_path / "clip.png", fps=8)
    Image.fromarray(photo[:50, :70]).save(tmp_path / "ref.png")
    with pytest.raises(CCDMError, match="70x50.*128x96"):
        evaluate_cli.run(evaluate_args(str(tmp_path / "clip.png"), "--reference", str(tmp_path / "ref.png")))


@pytest.mark.parametrize("name,content", [("missing.mp4", None), ("broken.mp4", b"not a video"),
                                          ("broken.gif", b"GIF89a nonsense")])
def test_evaluate_refuses_unreadable_videos(tmp_path, name, content):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(CCDMError):
        evaluate_cli.run(evaluate_args(str(tmp_path / name)))


def test_evaluate_refuses_unreadable_references(tmp_path, photo):
    write_video(pan(photo, 0, frames=2), tmp_path / "clip.png", fps=8)
    (tmp_path / "ref.png").write_bytes(b"not an image")
    with pytest.raises(CCDMError, match="cannot read reference image"):
        evaluate_cli.run(evaluate_args(str(tmp_path / "clip.png"), "--reference", str(tmp_path / "ref.png")))
    with pytest.raises(CCDMError, match="reference image not found"):
        evaluate_cli.run(evaluate_args(str(tmp_path / "clip.png"), "--reference", str(tmp_path / "none.png")))
