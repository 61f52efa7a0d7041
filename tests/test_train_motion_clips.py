"""The second-generation motion clips (train/mini/motion_clips.py): still shots change by sensor noise only,
objects move the way their caption says over another photo, captions name what moves, every clip is rebuilt
byte for byte from its seed and index, and the stage writes the set."""
from __future__ import annotations

import json

import numpy as np
import pytest

from train.mini.motion_clips import (KINDS, clip_caption, clip_spec, cutout, make_motion_clip, object_clip,
                                     still_clip, write_motion_clips)


def _centroid(frame: np.ndarray, background: np.ndarray):
    """Where the frame differs from the bare background (the pasted object)."""
    diff = np.abs(frame.astype(np.int16) - background.astype(np.int16)).sum(-1) > 30
    ys, xs = np.nonzero(diff)
    return xs.mean(), ys.mean()


def test_a_still_shot_changes_by_sensor_noise_only():
    clip = still_clip("temple", 16, 64, np.random.default_rng(0))
    steps = np.abs(np.diff(clip.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    assert clip.shape == (16, 64, 64, 3) and (steps > 0.5).all() and (steps < 4).all()


@pytest.mark.parametrize("motion,axis,sign", [("moving left", 0, -1), ("moving right", 0, 1), ("moving up", 1, -1),
                                              ("moving down", 1, 1)])
def test_an_object_moves_the_way_its_caption_says(motion, axis, sign):
    clip = object_clip("cat", "bricks", motion, 16, 64)
    from train.mini.motion_clips import _square
    from train.mini.photos import photo

    background = _square(photo("bricks"), 64)
    first, last = _centroid(clip[0], background), _centroid(clip[-1], background)
    assert sign * (last[axis] - first[axis]) > 10  # pixels over the clip
    assert abs(last[1 - axis] - first[1 - axis]) < 3


def test_growing_and_turning_objects_change_size_and_orientation():
    from train.mini.motion_clips import _square
    from train.mini.photos import photo

    background = _square(photo("bricks"), 64).astype(np.int16)
    grow = object_clip("cat", "bricks", "growing", 8, 64)
    area = [(np.abs(f.astype(np.int16) - background).sum(-1) > 30).sum() for f in grow]
    assert area[-1] > 1.8 * area[0]
    turn = object_clip("cat", "bricks", "turning", 8, 64)
    assert not np.array_equal(turn[0], turn[-1])
    patch, alpha = cutout("cat", 32)
    assert patch.shape == (32, 32, 3) and alpha[16, 16] == 1 and alpha[0, 0] == 0


def test_specs_captions_and_clips_are_reproducible_per_index():
    specs = [clip_spec(i, seed=3) for i in range(8)]
    assert [s["kind"] for s in specs] == list(KINDS) * 2
    assert all(16 <= s["frames"] <= 32 and s["subject"] != s["background"] for s in specs)
    captions = [clip_caption(s) for s in specs]
    assert captions[0].endswith(", still shot") and ", camera " in captions[2]
    assert " over " in captions[1] and " over " in captions[3] and ", camera " in captions[3]
    for spec in specs:
        a, b = make_motion_clip(spec), make_motion_clip(dict(spec))
        assert np.array_equal(a, b) and a.shape == (spec["frames"], 64, 64, 3)
    assert clip_spec(5, seed=3) == specs[5] and clip_spec(5, seed=4) != specs[5]


def test_the_stage_writes_clips_and_captions(tmp_path):
    from train.mini.__main__ import main

    assert main(["clips-v2", "--out", str(tmp_path), "--count", "4", "--seed", "1"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == list(KINDS)
    assert all((tmp_path / r["video"]).is_file() for r in rows)
    with pytest.raises(ValueError, match="unknown clip kinds"):
        write_motion_clips(tmp_path, count=1, kinds=("dance",))
