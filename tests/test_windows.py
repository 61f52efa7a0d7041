"""Context windows: coverage, wrap-around, validation, and exact fusion of identical windows."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from ccdm_core import CCDMError, WindowedDenoiser, plan_windows
from ccdm_core.windows import frames_covered, window_weights


@given(st.integers(1, 200), st.integers(1, 32), st.data(), st.booleans())
@settings(max_examples=200, deadline=None)
def test_windows_cover_every_frame(num_frames, length, data, closed_loop):
    overlap = data.draw(st.integers(0, length - 1))
    windows = plan_windows(num_frames, length, overlap, closed_loop)
    assert frames_covered(windows, num_frames)
    for w in windows:
        assert len(w) == min(length, num_frames)
        assert len(set(w)) == len(w)
        assert all(0 <= i < num_frames for i in w)
    if not closed_loop:
        assert all(list(w) == list(range(w[0], w[0] + len(w))) for w in windows)
        starts = [w[0] for w in windows]
        assert all(b - a <= length - overlap for a, b in zip(starts, starts[1:]))


def test_closed_loop_wraps_and_open_loop_does_not():
    assert plan_windows(20, 8, 4, closed_loop=True)[-1] == (16, 17, 18, 19, 0, 1, 2, 3)
    assert plan_windows(20, 8, 4) == [tuple(range(s, s + 8)) for s in (0, 4, 8, 12)]
    assert plan_windows(5, 16, 4, closed_loop=True) == [(0, 1, 2, 3, 4)]


@pytest.mark.parametrize("args,words", [((0, 16, 4), "num_frames"), ((8, 0, 0), "context_length"),
                                        ((8, 4, 4), "smaller than context_length"), ((8, 4, -1), "context_overlap"),
                                        ((8.5, 4, 1), "num_frames")])
def test_bad_window_arguments(args, words):
    with pytest.raises(CCDMError, match=words):
        plan_windows(*args)


def test_weights_peak_in_the_centre():
    w = window_weights(8)
    assert w.tolist() == [1, 2, 3, 4, 4, 3, 2, 1]


@given(st.integers(2, 40), st.integers(2, 12), st.data(), st.booleans(), st.sampled_from([torch.float32, torch.float16]))
@settings(max_examples=60, deadline=None)
def test_fusing_identical_windows_returns_the_input_exactly(num_frames, length, data, closed_loop, dtype):
    overlap = data.draw(st.integers(0, length - 1))
    x = torch.randn(2, 4, num_frames, 3, 3).to(dtype)
    windowed = WindowedDenoiser(lambda v, sigma: v, length, overlap, closed_loop)
    assert torch.equal(windowed(x, torch.ones(2)), x)


def test_windows_average_with_weights_and_slice_per_frame_args():
    calls = []

    def denoiser(x, sigma, cond):
        calls.append((x.shape[2], cond.shape))
        return torch.ones_like(x) * len(calls)  # each window returns its own constant

    windowed = WindowedDenoiser(denoiser, 4, 2, frame_args={"cond": (1, 4)})
    x = torch.zeros(1, 1, 6, 1, 1)
    out = windowed(x, torch.ones(1), cond=torch.zeros(1, 6, 3, 5))
    assert calls == [(4, (1, 4, 3, 5))] * 2
    # weights (1, 2, 2, 1); frames 2, 3 are in both windows: 2 and 1 from window 1, 1 and 2 from window 2
    assert out[0, 0, :, 0, 0].tolist() == pytest.approx([1, 1, (1 * 2 + 2 * 1) / 3, (1 * 1 + 2 * 2) / 3, 2, 2])
    with pytest.raises(CCDMError, match="cond has 5 frames"):
        windowed(x, torch.ones(1), cond=torch.zeros(1, 5, 3, 5))


def test_one_window_calls_the_denoiser_once_unchanged():
    seen = []
    windowed = WindowedDenoiser(lambda x, s, **kw: seen.append(kw) or x * 2, 16, 4)
    x = torch.randn(1, 4, 16, 2, 2)
    assert torch.equal(windowed(x, torch.ones(1), cond="c"), x * 2)
    assert seen == [{"cond": "c"}]
