"""The video-to-video benchmark's motion-following measure: it tells a clip that moves with the source from one
that moves against it or not at all."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ccdm_core.bench_v2v import mean_flows, motion_correlation


def panning(shifts, size=48, seed=0):
    """A textured image panned by the given horizontal shift per frame (pixels)."""
    rng = np.random.default_rng(seed)
    texture = (rng.random((size, size * 3)) * 255).astype(np.uint8)
    texture = np.repeat(np.repeat(texture[::4, ::4], 4, 0), 4, 1)[:size, :]
    positions = np.concatenate([[0], np.cumsum(shifts)]).astype(int) + size
    return np.stack([np.repeat(texture[:, x:x + size, None], 3, axis=2) for x in positions])


def test_motion_correlation_follows_the_direction_of_motion():
    shifts = [1, 3, 0, 2, 4, 1, 0, 3]
    source = panning(shifts)
    assert motion_correlation(source, source) == pytest.approx(1.0)
    assert motion_correlation(panning(shifts, seed=1), source) > 0.9  # other content, same motion
    assert motion_correlation(panning([-s for s in shifts], seed=1), source) < -0.9
    assert mean_flows(source).shape == (len(shifts), 2)


def test_a_still_output_has_no_correlation():
    still = np.repeat(panning([0])[:1], 9, axis=0)
    assert math.isnan(motion_correlation(still, panning([1, 3, 0, 2, 4, 1, 0, 3])))
