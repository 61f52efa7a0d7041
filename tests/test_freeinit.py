"""FreeInit (Wu et al. 2023): low-pass masks, the 3-D frequency mix, noise reinitialisation and the pass loop."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from ccdm_core.errors import CCDMError
from ccdm_core.freeinit import (
    FREEINIT_FILTERS,
    FreeInitSettings,
    diffused_noise,
    freeinit_infotext,
    freeinit_passes,
    low_pass_mask,
    mix_frequencies,
    parse_freeinit,
    reinitialised_noise,
)
from ccdm_core.sampling import ddim_sigmas, initial_noise, sample_ddim, video_generators
from ccdm_core.schedules import make_alphas_cumprod

SHAPE = (2, 3, 6, 8, 10)  # b c f h w
SIGMA_MAX = 14.6
DIMS = (-3, -2, -1)


def randn(seed: int, shape=SHAPE, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def fft(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftn(x.double(), dim=DIMS)


def settings(**kw) -> FreeInitSettings:
    return FreeInitSettings(**{"iterations": 3, **kw})


# ---- the frequency mix -------------------------------------------------------------------------------------------

def test_mask_of_ones_keeps_low_from_and_zeros_keeps_high_from():
    a, b = randn(0), randn(1)
    ones, zeros = torch.ones(SHAPE[-3:]), torch.zeros(SHAPE[-3:])
    torch.testing.assert_close(mix_frequencies(a, b, ones), a, rtol=0, atol=1e-5)
    torch.testing.assert_close(mix_frequencies(a, b, zeros), b, rtol=0, atol=1e-5)


def test_ideal_mask_takes_each_band_from_its_source():
    a, b = randn(2), randn(3)
    mask = low_pass_mask(*SHAPE[-3:], settings(filter="ideal", spatial=0.5, temporal=0.5))
    inside = mask.bool()
    assert 1 < int(inside.sum()) < inside.numel()
    out = fft(mix_frequencies(a, b, mask))
    torch.testing.assert_close(out[..., inside], fft(a)[..., inside], rtol=0, atol=1e-4)
    torch.testing.assert_close(out[..., ~inside], fft(b)[..., ~inside], rtol=0, atol=1e-4)


def test_mix_is_real_fp32_math_in_the_input_dtype():
    a, b = randn(4).half(), randn(5).half()
    mask = low_pass_mask(*SHAPE[-3:], settings())
    out = mix_frequencies(a, b, mask)
    assert out.dtype == torch.float16 and tuple(out.shape) == SHAPE and torch.isfinite(out).all()
    with pytest.raises(CCDMError, match="mask"):
        mix_frequencies(a, b, torch.ones(3, 3, 3))


# ---- masks -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(5, 7, 9), (4, 8, 6), (1, 3, 4)])
@pytest.mark.parametrize("name", FREEINIT_FILTERS)
def test_masks_are_one_at_dc_and_fall_with_frequency(name, size):
    mask = low_pass_mask(*size, settings(filter=name))
    assert tuple(mask.shape) == size and mask.dtype == torch.float32
    assert mask[0, 0, 0] == 1 and bool(((mask >= 0) & (mask <= 1)).all())
    for dim, line in enumerate((mask[:, 0, 0], mask[0, :, 0], mask[0, 0, :])):
        half = line[: size[dim] // 2 + 1]  # fftfreq order: DC, 1, 2, ... up to Nyquist
        assert bool((half[1:] <= half[:-1]).all()), (name, dim, half)
    mirrored = torch.roll(torch.flip(mask, DIMS), (1, 1, 1), DIMS)
    torch.testing.assert_close(mask, mirrored, rtol=1e-6, atol=0)  # mask(-k) = mask(k): the mix stays real


def test_filter_shapes_differ_and_the_stop_frequency_moves_the_cut_off():
    size = (8, 16, 16)
    masks = {name: low_pass_mask(*size, settings(filter=name)) for name in FREEINIT_FILTERS}
    assert set(masks["ideal"].unique().tolist()) == {0.0, 1.0}
    assert set(masks["box"].unique().tolist()) == {0.0, 1.0}
    assert masks["box"].sum() > masks["ideal"].sum()  # the cuboid holds the ellipsoid
    for smooth in ("gaussian", "butterworth"):
        assert ((masks[smooth] > 0) & (masks[smooth] < 1)).any()
        for binary in ("box", "ideal"):
            assert not torch.allclose(masks[smooth], masks[binary])
    assert not torch.allclose(masks["gaussian"], masks["butterworth"])
    for name in FREEINIT_FILTERS:
        narrow = low_pass_mask(*size, settings(filter=name, spatial=0.25, temporal=0.25))
        wide = low_pass_mask(*size, settings(filter=name, spatial=0.75, temporal=0.5))
        assert wide.sum() > narrow.sum() and bool((wide >= narrow).all()), name
    # half power at the stop frequency for the smooth filters: width 16, stop 0.25 -> k = 2 (2 * 2/16 = 0.25)
    for smooth in ("gaussian", "butterworth"):
        assert masks[smooth][0, 0, 2].item() == pytest.approx(0.5)


def test_butterworth_order_sharpens_the_edge():
    soft = low_pass_mask(1, 1, 32, settings(order=1))[0, 0]
    sharp = low_pass_mask(1, 1, 32, settings(order=8))[0, 0]
    assert sharp[1] > soft[1] and sharp[8] < soft[8]  # inside the pass band and well past the stop (k = 4)


# ---- noise reinitialisation --------------------------------------------------------------------------------------

def test_diffusion_back_to_the_first_step_is_x0_plus_sigma_eps_in_unit_scale():
    z0, eps0 = randn(6), randn(7)
    torch.testing.assert_close(diffused_noise(z0, eps0, SIGMA_MAX) * SIGMA_MAX, z0 + SIGMA_MAX * eps0)


def test_reinitialised_noise_low_band_is_the_diffused_result_and_high_band_fresh():
    z0, eps0, fresh = randn(8), randn(9), randn(10)
    s = settings(filter="ideal", spatial=0.5, temporal=0.5)
    inside = low_pass_mask(*SHAPE[-3:], s).bool()
    out = fft(reinitialised_noise(z0, eps0, fresh, s, SIGMA_MAX))
    torch.testing.assert_close(out[..., inside], fft(z0 / SIGMA_MAX + eps0)[..., inside], rtol=0, atol=1e-4)
    torch.testing.assert_close(out[..., ~inside], fft(fresh)[..., ~inside], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", FREEINIT_FILTERS)
@pytest.mark.parametrize("noise", ["fresh", "initial"])
def test_reinitialised_noise_is_unit_variance(name, noise):
    shape = (1, 4, 8, 16, 16)
    z0, eps0, fresh = randn(11, shape), randn(12, shape), randn(13, shape)
    for stop in (0.25, 1.0):
        s = settings(filter=name, noise=noise, spatial=stop, temporal=stop)
        out = reinitialised_noise(z0, eps0, fresh if noise == "fresh" else None, s, SIGMA_MAX)
        assert out.std().item() == pytest.approx(1.0, abs=0.05) and abs(out.mean().item()) < 0.05


def test_initial_noise_variant_adds_the_low_band_of_the_result_to_eps0():
    z0, eps0 = randn(14), randn(15)
    s = settings(noise="initial")
    mask = low_pass_mask(*SHAPE[-3:], s)
    expected = eps0 + mix_frequencies(z0, torch.zeros_like(z0), mask) / SIGMA_MAX
    torch.testing.assert_close(reinitialised_noise(z0, eps0, None, s, SIGMA_MAX), expected, rtol=0, atol=1e-5)
    with pytest.raises(CCDMError, match="fresh_noise"):
        reinitialised_noise(z0, eps0, None, settings(), SIGMA_MAX)


# ---- the pass loop -----------------------------------------------------------------------------------------------

class FakeSampler:
    """A deterministic sample_pass recording its calls; it can raise on a chosen pass."""

    def __init__(self, raise_on: int = -1):
        self.calls, self.raise_on = [], raise_on

    def __call__(self, noise, index):
        self.calls.append((noise.clone(), index))
        if index == self.raise_on:
            raise KeyboardInterrupt("interrupted")
        return torch.tanh(noise * 2.0 + index)


class FreshNoise:
    def __init__(self):
        self.calls = []

    def __call__(self, index):
        self.calls.append(index)
        return randn(100 + index)


def test_one_iteration_is_one_plain_call():
    noise, sampler, fresh = randn(20), FakeSampler(), FreshNoise()
    out = freeinit_passes(sampler, noise, SIGMA_MAX, FreeInitSettings(), fresh)
    assert len(sampler.calls) == 1 and sampler.calls[0][1] == 0 and torch.equal(sampler.calls[0][0], noise)
    assert torch.equal(out, torch.tanh(noise * 2.0)) and fresh.calls == []
    assert not FreeInitSettings().enabled and settings().enabled


def test_three_iterations_rebuild_the_noise_from_each_result():
    noise, sampler, fresh = randn(21), FakeSampler(), FreshNoise()
    s = settings(filter="ideal", spatial=0.5, temporal=0.5)
    out = freeinit_passes(sampler, noise, SIGMA_MAX, s, fresh)
    assert [i for _, i in sampler.calls] == [0, 1, 2] and fresh.calls == [1, 2]
    first, second, third = (n for n, _ in sampler.calls)
    assert torch.equal(first, noise)
    for prev, nxt, index in ((first, second, 1), (second, third, 2)):
        result = torch.tanh(prev * 2.0 + index - 1)
        torch.testing.assert_close(nxt, reinitialised_noise(result, noise, randn(100 + index), s, SIGMA_MAX))
    inside = low_pass_mask(*SHAPE[-3:], s).bool()
    diffused = torch.tanh(first * 2.0) / SIGMA_MAX + noise  # pass 0's result diffused with the initial noise
    torch.testing.assert_close(fft(second)[..., inside], fft(diffused)[..., inside], rtol=0, atol=1e-4)
    assert torch.equal(out, torch.tanh(third * 2.0 + 2))


def test_initial_noise_variant_draws_nothing():
    sampler, fresh = FakeSampler(), FreshNoise()
    freeinit_passes(sampler, randn(22), SIGMA_MAX, settings(noise="initial"), fresh)
    assert len(sampler.calls) == 3 and fresh.calls == []


def test_an_interrupt_in_the_second_pass_propagates_and_stops():
    sampler, fresh = FakeSampler(raise_on=1), FreshNoise()
    with pytest.raises(KeyboardInterrupt):
        freeinit_passes(sampler, randn(23), SIGMA_MAX, settings(iterations=4), fresh)
    assert [i for _, i in sampler.calls] == [0, 1] and fresh.calls == [1]


def test_passes_around_the_projects_ddim_sampler():
    """The pass plumbing with sample_ddim: each pass starts at noise * sigmas[0] and returns the denoised latent."""
    sigmas = ddim_sigmas(make_alphas_cumprod(), 3)
    sigma_max, shape, steps = float(sigmas[0]), (2, 4, 4, 8, 8), len(sigmas) - 1
    model_calls, starts = [], []

    def model(x, sigma, **extra):
        model_calls.append(float(sigma[0]))
        return x * 0.5

    def sample_pass(noise, index):
        starts.append(noise * sigmas[0])
        return sample_ddim(model, noise * sigmas[0], sigmas)

    def run(s):
        generators = video_generators([7, 8])
        noise = initial_noise(shape, generators)
        return noise, freeinit_passes(sample_pass, noise, sigma_max, s, lambda i: initial_noise(shape, generators))

    noise, plain = run(FreeInitSettings())
    assert len(starts) == 1 and torch.equal(starts[0], noise * sigmas[0]) and len(model_calls) == steps
    assert torch.equal(plain, sample_ddim(model, noise * sigmas[0], sigmas))
    starts.clear()
    s = settings(filter="butterworth")
    _, out = run(s)
    assert len(starts) == 3 and len(model_calls) == 5 * steps and torch.isfinite(out).all()
    generators = video_generators([7, 8])
    first, fresh = initial_noise(shape, generators), initial_noise(shape, generators)
    expected = reinitialised_noise(plain, first, fresh, s, sigma_max) * sigmas[0]
    torch.testing.assert_close(starts[1], expected)
    _, again = run(s)  # the generators carry all randomness: the same seeds give the same three-pass result
    assert torch.equal(out, again)


# ---- settings and infotext ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("iterations", 0), ("iterations", 6), ("iterations", True), ("iterations", 2.0),
    ("filter", "hann"), ("spatial", 0.0), ("spatial", 1.5), ("spatial", float("nan")), ("temporal", -0.1),
    ("temporal", True), ("noise", "random"), ("order", 0),
])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(CCDMError, match=field):
        FreeInitSettings(**{field: value})


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FreeInitSettings().iterations = 2


@pytest.mark.parametrize("s", [
    FreeInitSettings(iterations=3),
    FreeInitSettings(iterations=5, filter="gaussian", spatial=1.0, temporal=0.1, noise="initial"),
    FreeInitSettings(iterations=2, filter="butterworth", spatial=0.3, temporal=0.7, order=2),
])
def test_infotext_round_trip(s):
    text = freeinit_infotext(s)
    assert list(text) == ["CCDM FreeInit"]
    assert FreeInitSettings(**parse_freeinit(text["CCDM FreeInit"])) == s


def test_infotext_format_and_errors():
    assert freeinit_infotext(FreeInitSettings(iterations=3)) == {"CCDM FreeInit": "3/butterworth/0.25/0.25/fresh"}
    assert freeinit_infotext(FreeInitSettings()) == {} and freeinit_infotext(None) == {}
    for bad in ("", "3/butterworth/0.25/fresh", "three/box/0.25/0.25/fresh"):
        with pytest.raises(CCDMError, match="freeinit"):
            parse_freeinit(bad)
    with pytest.raises(CCDMError, match="spatial"):
        parse_freeinit("3/box/2/0.25/fresh")
    with pytest.raises(CCDMError, match="iterations"):
        parse_freeinit("9/box/0.25/0.25/fresh")
