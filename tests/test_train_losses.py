"""Eq. 13's terms: known inputs give known values, zero at a perfect prediction, invariances."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from train.losses import (LossWeights, ccdm_loss, eps_mse, keyframe_loss, keyframe_weights, min_snr_weights,
                          pin_keyframes, predicted_x0, sample_key_mask, temporal_neighbour_loss)


def video(seed: int, b: int = 2, c: int = 4, f: int = 6, h: int = 3, w: int = 3) -> torch.Tensor:
    return torch.randn(b, c, f, h, w, generator=torch.Generator().manual_seed(seed))


def test_eps_mse_known_value_and_zero():
    eps = torch.zeros(1, 1, 2, 1, 1)
    pred = torch.tensor([1.0, 3.0]).view(1, 1, 2, 1, 1)
    assert eps_mse(pred, eps).item() == pytest.approx(5.0)  # (1 + 9) / 2
    x = video(0)
    assert eps_mse(x, x).item() == 0.0


def test_temporal_term_known_value():
    # errors e = eps - pred per frame: 0, 1, 3 (one element each)
    eps = torch.zeros(1, 1, 3, 1, 1)
    pred = -torch.tensor([0.0, 1.0, 3.0]).view(1, 1, 3, 1, 1)
    # k=1: pairs (0,1): 1, (1,2): 4 -> mean 2.5 ; k=2 adds (0,2): 9 -> (1 + 4 + 9) / 3
    assert temporal_neighbour_loss(pred, eps, 1).item() == pytest.approx(2.5)
    assert temporal_neighbour_loss(pred, eps, 2).item() == pytest.approx(14 / 3)
    assert temporal_neighbour_loss(pred, eps, 10).item() == pytest.approx(14 / 3)  # k is capped at f - 1


def test_temporal_term_zero_cases():
    x = video(1)
    assert temporal_neighbour_loss(x, x, 2).item() == 0.0
    single = video(2, f=1)
    assert temporal_neighbour_loss(single, torch.zeros_like(single), 3).item() == 0.0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 5), offset=st.floats(-5, 5))
def test_temporal_term_ignores_an_error_shared_by_all_frames(seed, k, offset):
    eps, pred = video(seed), video(seed + 1)
    shared = torch.randn(2, 4, 1, 3, 3, generator=torch.Generator().manual_seed(seed + 2)) * offset
    base = temporal_neighbour_loss(pred, eps, k)
    shifted = temporal_neighbour_loss(pred + shared, eps, k)  # same offset on every frame's error
    assert shifted.item() == pytest.approx(base.item(), rel=1e-4, abs=1e-5)


def test_predicted_x0_inverts_the_forward_process():
    x0, eps = video(3), video(4)
    a = torch.tensor([0.9, 0.2])
    a5 = a.view(-1, 1, 1, 1, 1)
    x_t = a5.sqrt() * x0 + (1 - a5).sqrt() * eps
    torch.testing.assert_close(predicted_x0(x_t, eps, a), x0, rtol=1e-5, atol=1e-5)


def test_keyframe_weights_known_values():
    mask = torch.tensor([[True, False, False, False], [False, False, False, False]])
    w = keyframe_weights(mask)
    raw = torch.tensor([0.0, 1 / 2, 1 / 3, 1 / 4])  # 1 / (1 + distance)
    torch.testing.assert_close(w[0], raw * 3 / raw.sum())
    assert w[0].sum().item() == pytest.approx(3.0)  # sums to the number of non-key frames
    assert w[1].abs().sum().item() == 0.0  # no keyframes: no weights
    both = keyframe_weights(torch.tensor([[True, False, False, True]]))
    assert both[0, 1].item() == pytest.approx(both[0, 2].item())  # nearest keyframe counts


def test_keyframe_loss_known_value_and_zero():
    x0 = torch.zeros(1, 1, 3, 1, 1)
    pred = torch.tensor([5.0, 1.0, 2.0]).view(1, 1, 3, 1, 1)  # frame 0 is the keyframe: its error is ignored
    mask = torch.tensor([[True, False, False]])
    w1, w2 = 1 / 2, 1 / 3
    norm = 2 / (w1 + w2)
    expected = (norm * w1 * 1.0 + norm * w2 * 4.0) / 2
    assert keyframe_loss(pred, x0, mask).item() == pytest.approx(expected)
    assert keyframe_loss(x0, x0, mask).item() == 0.0
    no_keys = torch.zeros(1, 3, dtype=torch.bool)
    assert keyframe_loss(pred, x0, no_keys).item() == 0.0
    assert keyframe_loss(pred, x0, mask, clip_weights=torch.tensor([2.0])).item() == pytest.approx(2 * expected)


def test_pinned_keyframes_carry_the_true_latent():
    x0, guess = video(5), video(6)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 2] = True
    pinned = pin_keyframes(guess, x0, mask)
    torch.testing.assert_close(pinned[0, :, 2], x0[0, :, 2])
    torch.testing.assert_close(pinned[1], guess[1])


def test_sample_key_mask_counts():
    g = torch.Generator().manual_seed(0)
    mask = sample_key_mask(200, 24, 0.5, g)
    counts = mask.sum(dim=1)
    assert counts.max().item() <= 3 and counts.min().item() == 0  # 1..24 // 8 keyframes, or none
    assert 60 < (counts > 0).sum().item() < 140
    assert sample_key_mask(10, 8, 1.0, g).sum(dim=1).eq(1).all()  # max(1, 8 // 8) = 1
    assert not sample_key_mask(10, 8, 0.0, g).any()


def test_min_snr_weights():
    a = torch.tensor([0.999, 0.5, 0.01])
    w = min_snr_weights(a, 5.0)
    torch.testing.assert_close(w, torch.tensor([5.0, 1.0, 0.01 / 0.99]))
    assert min_snr_weights(a, 0.0) is None


def test_ccdm_loss_combines_terms_and_lambda2_zero_disables_keyframes():
    eps, pred, x0, xp = video(7), video(8), video(9), video(10)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, 0] = True
    weights = LossWeights(lambda1=0.5, k=2, lambda2=0.25, snr_gamma=0.0)
    terms = ccdm_loss(pred, eps, weights, xp, x0, mask)
    expected = eps_mse(pred, eps) + 0.5 * temporal_neighbour_loss(pred, eps, 2) + 0.25 * keyframe_loss(xp, x0, mask)
    assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)
    off = ccdm_loss(pred, eps, LossWeights(0.5, 2, 0.0), xp, x0, mask)
    assert off.keyframe.item() == 0.0
    assert ccdm_loss(eps, eps, weights, x0, x0, mask).total.item() == 0.0
