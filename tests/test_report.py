"""The consistency report: `ccdm evaluate`'s numbers for the written clip, the largest jump where the clip jumps,
a plot that marks it."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from ccdm_core import evaluate_cli
from ccdm_core.report import clip_report, report_plot, report_summary, write_report
from ccdm_core.video import write_video


def drifting(frames=8, size=48, jump_at=None, seed=0):
    """A smooth texture drifting 1 px per frame; at `jump_at` the content is replaced (a cut)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size // 4, size * 2 // 4, 3)).astype(np.uint8)
    texture = np.repeat(np.repeat(base, 4, 0), 4, 1)
    clip = np.stack([texture[:, t:t + size] for t in range(frames)])
    if jump_at is not None:
        clip[jump_at + 1:] = 255 - clip[jump_at + 1:]
    return clip


def test_report_numbers_are_ccdm_evaluate_of_the_written_clip(tmp_path):
    clip = drifting()
    path = write_video(clip, tmp_path / "clip.png", fps=8)  # APNG: lossless, so the file holds these frames
    parser = argparse.ArgumentParser()
    evaluate_cli.add_parser(parser.add_subparsers(dest="command"))
    evaluated = evaluate_cli.run(parser.parse_args(["evaluate", str(path), "--json"]))
    report = clip_report(clip, 8, per_frame=True)
    for key in ("frames", "fps", "width", "height", "warp_error", "flicker_index", "motion_magnitude_pct"):
        assert report[key] == evaluated[key], key
    assert report["per_frame"]["warp_error"] == evaluated["per_frame"]["warp_error"]
    assert "per_frame" not in clip_report(clip, 8)


def test_the_largest_jump_is_where_the_clip_jumps():
    report = clip_report(drifting(jump_at=4), 8, per_frame=True)
    assert report["largest_jump"] == {"frames": [4, 5], "warp_error": None}  # a cut: no pixel matches
    assert "between frames 4 and 5" in report_summary(report)
    smooth = clip_report(drifting(), 8, per_frame=True)
    errors = smooth["per_frame"]["warp_error"]
    assert smooth["largest_jump"]["frames"][0] == errors.index(max(errors))
    assert clip_report(drifting(frames=1), 8)["largest_jump"] is None


def test_the_plot_marks_the_largest_pair_in_red():
    errors = [1.0, 2.0, 9.0, 1.5]
    plot = report_plot(errors)
    assert plot.shape == (150, 480, 3) and plot.dtype == np.uint8
    red = (plot[..., 0] > 180) & (plot[..., 1] < 80) & (plot[..., 2] < 80)
    xs = np.nonzero(red)[1]
    assert red.any() and 200 < xs.mean() < 400  # the third of four points, not the first
    assert not np.array_equal(plot, report_plot([9.0, 2.0, 1.0, 1.5]))


def test_report_json_is_written_whole(tmp_path):
    report = clip_report(drifting(), 8)
    path = write_report(report, tmp_path / "clip.report.json")
    assert json.loads(path.read_text()) == report
    assert [p.name for p in tmp_path.iterdir()] == ["clip.report.json"]


@pytest.mark.parametrize("frames", [2, 5])
def test_short_clips_report(frames):
    report = clip_report(drifting(frames=frames), 4)
    assert report["frames"] == frames and report["warp_error"] is not None
