"""Beta schedules against their closed forms; alphas_cumprod swap restores by identity."""
import math

import pytest
import torch

from ccdm_core.errors import CCDMError
from ccdm_core.schedules import (
    BETA_SCHEDULES,
    make_alphas_cumprod,
    make_betas,
    sigmas_from_alphas_cumprod,
    swap_alphas_cumprod,
)


@pytest.mark.parametrize("schedule", BETA_SCHEDULES)
def test_betas_closed_form_ends_and_monotone(schedule):
    betas = make_betas(schedule, 0.00085, 0.012, 1000)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(0.00085, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.012, rel=1e-12)
    assert bool((betas[1:] > betas[:-1]).all())


def test_linear_and_scaled_linear_closed_forms_differ():
    t = torch.arange(1000, dtype=torch.float64) / 999
    linear = 0.00085 + t * (0.012 - 0.00085)
    scaled = (math.sqrt(0.00085) + t * (math.sqrt(0.012) - math.sqrt(0.00085))) ** 2
    assert torch.allclose(make_betas("linear"), linear, rtol=1e-12, atol=0)
    assert torch.allclose(make_betas("scaled_linear"), scaled, rtol=1e-12, atol=0)
    assert (make_betas("linear") - make_betas("scaled_linear")).abs().max() > 1e-3


def test_alphas_cumprod_is_cumulative_product_and_decreasing():
    betas = make_betas("linear", 0.001, 0.02, 50)
    ac = make_alphas_cumprod("linear", 0.001, 0.02, 50)
    assert ac.dtype == torch.float64
    assert ac[0].item() == pytest.approx(1 - 0.001)
    assert ac[-1].item() == pytest.approx(math.prod(1 - b for b in betas.tolist()), rel=1e-12)
    assert bool((ac[1:] < ac[:-1]).all())


def test_sd_schedule_sigma_range():
    sigmas = sigmas_from_alphas_cumprod(make_alphas_cumprod())
    assert sigmas[0].item() == pytest.approx(math.sqrt(0.00085 / (1 - 0.00085)))
    assert sigmas[-1].item() == pytest.approx(14.6146, abs=1e-3)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(schedule="cosine"), "linear, scaled_linear"),
        (dict(beta_start=0.02, beta_end=0.01), "beta_start < beta_end"),
        (dict(beta_start=0.0), "0 < beta_start"),
        (dict(beta_end=1.0), "< 1"),
        (dict(timesteps=1), "2..10000"),
        (dict(timesteps=10001), "2..10000"),
        (dict(timesteps=10.5), "2..10000"),
        (dict(beta_start=float("nan")), "finite"),
    ],
)
def test_bad_schedule_arguments_are_named(kwargs, word):
    with pytest.raises(CCDMError) as info:
        make_alphas_cumprod(**kwargs)
    assert word in str(info.value) and "\n" not in str(info.value)


class _Holder:
    def __init__(self):
        self.alphas_cumprod = make_alphas_cumprod().float()


class _Buffered(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("alphas_cumprod", make_alphas_cumprod().float())


def test_swap_restores_identity_on_success():
    model = _Holder()
    original = model.alphas_cumprod
    new = make_alphas_cumprod("linear")
    with swap_alphas_cumprod(model, new) as swapped:
        assert model.alphas_cumprod is swapped
        assert swapped.dtype == torch.float32
        assert torch.equal(swapped, new.float())
    assert model.alphas_cumprod is original
    assert torch.equal(original, make_alphas_cumprod().float())


def test_swap_restores_identity_on_exception():
    model = _Holder()
    original = model.alphas_cumprod
    with pytest.raises(KeyboardInterrupt):
        with swap_alphas_cumprod(model, make_alphas_cumprod("linear")):
            raise KeyboardInterrupt
    assert model.alphas_cumprod is original


def test_swap_on_module_buffer_keeps_it_a_buffer():
    model = _Buffered()
    original = model.alphas_cumprod
    state_before = {k: v for k, v in model.state_dict().items()}
    with swap_alphas_cumprod(model, make_alphas_cumprod("linear")):
        assert model._buffers["alphas_cumprod"] is model.alphas_cumprod
        assert model.alphas_cumprod is not original
        assert torch.equal(model.state_dict()["alphas_cumprod"], make_alphas_cumprod("linear").float())
    assert model._buffers["alphas_cumprod"] is original
    assert "alphas_cumprod" not in model.__dict__
    assert torch.equal(model.state_dict()["alphas_cumprod"], state_before["alphas_cumprod"])


def test_swap_refuses_missing_attribute_and_wrong_shape():
    with pytest.raises(CCDMError, match="no alphas_cumprod"):
        with swap_alphas_cumprod(object(), make_alphas_cumprod()):
            pass
    model = _Holder()
    original = model.alphas_cumprod
    with pytest.raises(CCDMError, match="shape"):
        with swap_alphas_cumprod(model, make_alphas_cumprod(timesteps=500)):
            pass
    assert model.alphas_cumprod is original
