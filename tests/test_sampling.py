"""Sigma schedules, samplers against analytic denoisers, per-video noise, and the CFG video denoiser layout."""
import math

import pytest
import torch
from einops import rearrange, reduce, repeat

from ccdm_core.errors import CCDMError
from ccdm_core.lcm import lcm_sigmas
from ccdm_core.sampling import (
    CALLBACK_KEYS,
    SAMPLERS,
    DiscreteSchedule,
    EpsVideoDenoiser,
    ddim_sigmas,
    get_sampler,
    get_sigmas,
    initial_noise,
    sample_ddim,
    sample_euler,
    sample_euler_ancestral,
    video_generators,
    video_noise_sampler,
)
from ccdm_core.schedules import make_alphas_cumprod

AC = make_alphas_cumprod()
SCHEDULE = DiscreteSchedule(AC)
MU, STD = 0.7, 0.5  # toy data: every latent element ~ N(MU, STD^2)


def gaussian_denoiser(x, sigma):
    """Exact E[x0 | x] for x0 ~ N(MU, STD^2), x = x0 + sigma * n."""
    sigma = rearrange(sigma, "b -> b 1 1 1 1")
    return MU + STD**2 / (STD**2 + sigma**2) * (x - MU)


def point_denoiser(x, sigma):
    """Exact denoiser when the data is the single point MU."""
    return torch.full_like(x, MU)


def gaussian_start(sigmas, seed=0, shape=(2, 4, 4, 32, 32)):
    """x at sigmas[0] drawn from the exact noisy marginal, and the clean point the ODE maps it to."""
    z = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return MU + math.sqrt(STD**2 + float(sigmas[0]) ** 2) * z, MU + STD * z


# --- schedule <-> sigma ---------------------------------------------------------------------------------------


def test_sigma_t_round_trip_and_integer_steps():
    t = torch.cat([torch.linspace(0, 999, 37, dtype=torch.float64), torch.tensor([0.25, 500.5, 998.9])])
    assert torch.allclose(SCHEDULE.sigma_to_t(SCHEDULE.t_to_sigma(t)), t, atol=1e-6)
    t32 = t.float()
    assert SCHEDULE.sigma_to_t(SCHEDULE.t_to_sigma(t32)).dtype == torch.float32
    assert torch.allclose(SCHEDULE.sigma_to_t(SCHEDULE.t_to_sigma(t32)), t32, atol=2e-3)
    steps = torch.tensor([0, 1, 500, 999], dtype=torch.float64)
    assert torch.allclose(SCHEDULE.t_to_sigma(steps), SCHEDULE.sigmas[[0, 1, 500, 999]], rtol=1e-12)


def test_sigma_to_t_clamps_and_keeps_shape():
    t = SCHEDULE.sigma_to_t(torch.tensor([[1e-4, 100.0], [SCHEDULE.sigma_min, SCHEDULE.sigma_max]]))
    assert t.shape == (2, 2) and t.dtype == torch.float32
    assert torch.allclose(t, torch.tensor([[0.0, 999.0], [0.0, 999.0]]), atol=1e-4)
    assert SCHEDULE.sigma_min < SCHEDULE.sigma_max


def test_schedule_rejects_bad_alphas_cumprod():
    with pytest.raises(CCDMError, match="strictly decreasing"):
        DiscreteSchedule(torch.tensor([0.5, 0.9]))
    with pytest.raises(CCDMError, match="1-D"):
        DiscreteSchedule(torch.ones(2, 2) * 0.5)


@pytest.mark.parametrize("kind", ["uniform", "karras"])
@pytest.mark.parametrize("steps", [1, 2, 20])
def test_get_sigmas_shape_ends_monotone(kind, steps):
    sigmas = get_sigmas(SCHEDULE, steps, kind)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (steps + 1,)
    assert sigmas[-1].item() == 0.0
    assert sigmas[0].item() == pytest.approx(SCHEDULE.sigma_max, rel=1e-6)
    if steps > 1:
        assert sigmas[-2].item() == pytest.approx(SCHEDULE.sigma_min, rel=1e-5)
    assert bool((sigmas[1:] < sigmas[:-1]).all())


def test_uniform_sigmas_are_evenly_spaced_timesteps():
    sigmas = get_sigmas(SCHEDULE, 10, "uniform")
    t = SCHEDULE.sigma_to_t(sigmas[:-1].double())
    assert torch.allclose(t, torch.linspace(999, 0, 10, dtype=torch.float64), atol=1e-3)


def test_karras_sigmas_are_uniform_in_sigma_to_the_one_over_rho():
    steps = get_sigmas(SCHEDULE, 8, "karras")[:-1].double() ** (1 / 7)
    diffs = steps[1:] - steps[:-1]
    assert torch.allclose(diffs, diffs.mean().expand_as(diffs), rtol=1e-4)


def test_get_sigmas_rejects_bad_kind_and_steps():
    with pytest.raises(CCDMError, match="uniform, karras"):
        get_sigmas(SCHEDULE, 10, "exponential")
    with pytest.raises(CCDMError, match="steps"):
        get_sigmas(SCHEDULE, 0)


@pytest.mark.parametrize(
    "steps, timesteps",
    [(50, list(range(981, 0, -20))), (3, [999, 667, 334, 1]), (1, [1]), (1000, [999] + list(range(999, 0, -1)))],
)
def test_ddim_sigmas_use_ddim_uniform_timesteps(steps, timesteps):
    sigmas = ddim_sigmas(AC, steps)
    expected = torch.cat([SCHEDULE.sigmas[timesteps], torch.zeros(1, dtype=torch.float64)]).float()
    assert sigmas.dtype == torch.float32
    assert torch.equal(sigmas, expected)


# --- samplers ---------------------------------------------------------------------------------------------------


def _run(name, model, x, sigmas, seeds=(1, 2), eta=None, **kw):
    """Run a registered sampler; stochastic ones get per-video noise from `seeds`."""
    if eta is None:
        eta = 1.0 if name == "euler_a" else 0.0
    if name == "euler":
        return sample_euler(model, x, sigmas, **kw)
    noise = video_noise_sampler(x, video_generators(list(seeds)))
    if name == "lcm":  # no eta; the boundary scalings need the schedule's timesteps
        return SAMPLERS[name](model, x, sigmas, noise_sampler=noise, sigma_to_t=SCHEDULE.sigma_to_t, **kw)
    return SAMPLERS[name](model, x, sigmas, noise_sampler=noise, eta=eta, **kw)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("steps", [1, 3])
def test_point_data_is_reached_exactly(name, steps):
    x = torch.randn(2, 4, 3, 8, 8) * SCHEDULE.sigma_max
    # LCM on its own skipping schedule: at t = 0 its boundary condition gives back the input by design
    sigmas = lcm_sigmas(AC, steps) if name == "lcm" else get_sigmas(SCHEDULE, steps)
    out = _run(name, point_denoiser, x, sigmas)
    assert torch.allclose(out, torch.full_like(out, MU), atol=1e-6)


@pytest.mark.parametrize("name", ["euler", "ddim"])
@pytest.mark.parametrize("sigma_fn", [lambda n: get_sigmas(SCHEDULE, n, "karras"), lambda n: ddim_sigmas(AC, n)])
def test_deterministic_samplers_converge_to_the_ode_solution(name, sigma_fn):
    errors = []
    for steps in (25, 400):
        sigmas = sigma_fn(steps)
        x, target = gaussian_start(sigmas)
        errors.append((_run(name, gaussian_denoiser, x, sigmas) - target).abs().max().item())
    assert errors[1] < 0.025 and errors[1] < errors[0] / 5


@pytest.mark.parametrize("name, eta", [("euler_a", 1.0), ("ddim", 1.0)])
def test_stochastic_samplers_reach_the_data_distribution(name, eta):
    sigmas = get_sigmas(SCHEDULE, 1000, "uniform")
    x, _ = gaussian_start(sigmas)
    out = _run(name, gaussian_denoiser, x, sigmas, eta=eta)
    assert abs(out.mean().item() - MU) < 0.01
    assert out.std().item() / STD == pytest.approx(1.0, abs=0.015)


def test_ddim_eta0_is_deterministic_and_equals_euler():
    # In sigma form, DDIM's eta=0 update x' = x0 + sigma' * (x - x0) / sigma is algebraically Euler's step.
    sigmas = ddim_sigmas(AC, 20)
    x, _ = gaussian_start(sigmas)
    first = sample_ddim(gaussian_denoiser, x, sigmas)
    assert torch.equal(first, sample_ddim(gaussian_denoiser, x, sigmas))
    assert torch.allclose(first, sample_euler(gaussian_denoiser, x, sigmas), atol=1e-5)


def test_ddim_with_eta_equals_euler_ancestral_with_the_same_noise():
    sigmas = get_sigmas(SCHEDULE, 15)
    x, _ = gaussian_start(sigmas)
    ddim = _run("ddim", gaussian_denoiser, x, sigmas, eta=0.6)
    euler_a = _run("euler_a", gaussian_denoiser, x, sigmas, eta=0.6)
    assert torch.allclose(ddim, euler_a, atol=1e-5)


def test_ancestral_noise_comes_from_the_noise_sampler():
    sigmas = get_sigmas(SCHEDULE, 6)
    x, _ = gaussian_start(sigmas)
    same_a = _run("euler_a", gaussian_denoiser, x, sigmas, seeds=(1, 2))
    same_b = _run("euler_a", gaussian_denoiser, x, sigmas, seeds=(1, 2))
    other = _run("euler_a", gaussian_denoiser, x, sigmas, seeds=(3, 2))
    assert torch.equal(same_a, same_b)
    assert not torch.allclose(other[0], same_a[0]) and torch.equal(other[1], same_a[1])
    with pytest.raises(CCDMError, match="noise_sampler"):
        sample_euler_ancestral(gaussian_denoiser, x, sigmas)


def test_video_noise_does_not_depend_on_batch_size():
    one = initial_noise((1, 4, 5, 8, 8), video_generators([42]))
    three = initial_noise((3, 4, 5, 8, 8), video_generators([42, 7, 9]))
    assert torch.equal(one[0], three[0]) and not torch.equal(three[0], three[1])
    noise_one = video_noise_sampler(one, video_generators([42]))
    noise_three = video_noise_sampler(three, video_generators([42, 7, 9]))
    assert torch.equal(noise_one(1.0, 0.5)[0], noise_three(1.0, 0.5)[0])
    half = initial_noise((1, 4, 5, 8, 8), video_generators([42]), dtype=torch.float16)
    assert half.dtype == torch.float16 and torch.equal(half, one.half())


def test_sampled_video_does_not_depend_on_batch_size():
    sigmas = get_sigmas(SCHEDULE, 5)
    seeds = [11, 12, 13]
    videos = initial_noise((3, 4, 2, 8, 8), video_generators(seeds)) * sigmas[0]
    alone = _run("euler_a", gaussian_denoiser, videos[:1], sigmas, seeds=seeds[:1])
    batch = _run("euler_a", gaussian_denoiser, videos, sigmas, seeds=seeds)
    assert torch.equal(alone[0], batch[0])


def test_bad_generators_and_seeds_are_named():
    with pytest.raises(CCDMError, match="one generator per video"):
        initial_noise((2, 4, 1, 8, 8), video_generators([1]))
    with pytest.raises(CCDMError, match="seed must be an integer"):
        video_generators([-1])


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_callback_gets_fixed_keys_and_can_interrupt(name):
    calls, seen = [], []

    def model(x, sigma):
        calls.append(sigma)
        return point_denoiser(x, sigma)

    def callback(info):
        seen.append(info)
        if info["i"] == 1:
            raise InterruptedError("stop")

    sigmas = get_sigmas(SCHEDULE, 4)
    x = torch.randn(1, 4, 2, 8, 8) * sigmas[0]
    with pytest.raises(InterruptedError):
        _run(name, model, x, sigmas, seeds=(5,), callback=callback)
    assert len(calls) == 2 and len(seen) == 2
    assert tuple(sorted(seen[0])) == tuple(sorted(CALLBACK_KEYS))
    assert seen[0]["total"] == 4 and seen[0]["sigma"] == pytest.approx(float(sigmas[0]))
    assert seen[0]["sigma_next"] == pytest.approx(float(sigmas[1]))
    assert calls[0].shape == (1,) and calls[0].dtype == torch.float32


def test_extra_args_reach_the_model():
    seen = {}

    def model(x, sigma, *, cond, scale):
        seen.update(cond=cond, scale=scale)
        return point_denoiser(x, sigma)

    sample_euler(model, torch.zeros(1, 1, 1, 2, 2), get_sigmas(SCHEDULE, 1), extra_args={"cond": "c", "scale": 3})
    assert seen == {"cond": "c", "scale": 3}


def test_unknown_sampler_and_bad_arguments_are_named():
    with pytest.raises(CCDMError, match="unknown sampler 'dpm'; accepted: ddim, euler, euler_a"):
        get_sampler("dpm")
    assert get_sampler("euler_a") is sample_euler_ancestral
    x = torch.zeros(1, 1, 1, 2, 2)
    with pytest.raises(CCDMError, match="non-increasing"):
        sample_euler(point_denoiser, x, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(CCDMError, match=r"eta must be a number in \[0, 1.0\]"):
        sample_ddim(point_denoiser, x, get_sigmas(SCHEDULE, 2), eta=1.5)


# --- EpsVideoDenoiser ---------------------------------------------------------------------------------------------


class RecordingUnet:
    """A fake eps UNet that records its inputs; eps depends on each frame's own input and context only."""

    def __init__(self):
        self.calls = []

    def __call__(self, x_flat, t_flat, context_flat, num_frames):
        self.calls.append(dict(x=x_flat, t=t_flat, context=context_flat, num_frames=num_frames))
        ctx = rearrange(reduce(context_flat, "n t d -> n", "mean"), "n -> n 1 1 1")
        return 0.1 * x_flat + ctx


def temporal_unet(x_flat, t_flat, context_flat, num_frames):
    """A fake eps UNet that mixes frames within each video (as temporal layers do) and never across videos."""
    x = rearrange(x_flat, "(n f) c h w -> n c f h w", f=num_frames)
    frame_mean = repeat(reduce(x, "n c f h w -> n c h w", "mean"), "n c h w -> (n f) c h w", f=num_frames)
    ctx = rearrange(reduce(context_flat, "n t d -> n", "mean"), "n -> n 1 1 1")
    return 0.3 * x_flat + 0.5 * frame_mean + ctx * (1 + t_flat.view(-1, 1, 1, 1) / 1000)


def _inputs(b=2, f=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, f, 6, 6, generator=g) * 3
    sigma = torch.linspace(1.0, 5.0, b)
    cond = torch.randn(b, 7, 8, generator=g)
    uncond = torch.randn(b, 7, 8, generator=g)
    return x, sigma, cond, uncond


def test_one_unet_call_with_cond_videos_first():
    unet = RecordingUnet()
    x, sigma, cond, uncond = _inputs(b=2, f=3)
    EpsVideoDenoiser(unet, AC)(x, sigma, cond=cond, uncond=uncond)
    assert len(unet.calls) == 1
    call = unet.calls[0]
    assert call["x"].shape == (2 * 2 * 3, 4, 6, 6) and call["num_frames"] == 3
    assert call["t"].shape == (12,) and call["context"].shape == (12, 7, 8)
    c_in = 1 / torch.sqrt(sigma**2 + 1)
    for half, context in enumerate((cond, uncond)):
        for video in range(2):
            for frame in range(3):
                row = (half * 2 + video) * 3 + frame
                assert torch.allclose(call["x"][row], x[video, :, frame] * c_in[video])
                assert torch.equal(call["context"][row], context[video])
                assert call["t"][row].item() == pytest.approx(SCHEDULE.sigma_to_t(sigma[video]).item())


def test_per_frame_cond_reaches_its_frames():
    unet = RecordingUnet()
    x, sigma, _, _ = _inputs(b=2, f=3)
    cond = torch.arange(2 * 3, dtype=torch.float32).view(2, 3, 1, 1).expand(2, 3, 7, 8)
    uncond = -torch.ones(2, 7, 8)
    EpsVideoDenoiser(unet, AC)(x, sigma, cond=cond, uncond=uncond)
    context = unet.calls[0]["context"]
    assert context[:6, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert context[6:, 0, 0].tolist() == [-1] * 6


def test_cfg_scale_one_equals_cond_only_and_guidance_formula():
    x, sigma, cond, uncond = _inputs()
    denoiser = EpsVideoDenoiser(temporal_unet, AC, cfg_scale=7.5)
    d_cond = denoiser(x, sigma, cond=cond)
    d_uncond = denoiser(x, sigma, cond=uncond)
    assert torch.allclose(denoiser(x, sigma, cond=cond, uncond=uncond, cfg_scale=1.0), d_cond, atol=1e-5)
    guided = denoiser(x, sigma, cond=cond, uncond=uncond)
    assert torch.allclose(guided, d_uncond + 7.5 * (d_cond - d_uncond), atol=1e-4)


def test_videos_do_not_influence_each_other():
    x, sigma, cond, uncond = _inputs(b=3, f=4)
    denoiser = EpsVideoDenoiser(temporal_unet, AC)
    batch = denoiser(x, sigma, cond=cond, uncond=uncond)
    for video in range(3):
        one = slice(video, video + 1)
        alone = denoiser(x[one], sigma[one], cond=cond[one], uncond=uncond[one])
        assert torch.allclose(alone[0], batch[video], atol=1e-6)


def test_denoiser_recovers_an_analytic_eps_model():
    def gaussian_eps_unet(x_flat, t_flat, context_flat, num_frames):
        sigma = SCHEDULE.t_to_sigma(t_flat)
        x = x_flat * rearrange((sigma**2 + 1).sqrt(), "n -> n 1 1 1")
        return (x - gaussian_denoiser(rearrange(x, "n c h w -> n c 1 h w"), sigma)[:, :, 0]) / sigma.view(-1, 1, 1, 1)

    x, sigma, cond, _ = _inputs()
    out = EpsVideoDenoiser(gaussian_eps_unet, AC)(x, sigma, cond=cond)
    assert torch.allclose(out, gaussian_denoiser(x, sigma), atol=1e-4)


def test_denoiser_keeps_dtype_and_rejects_bad_shapes():
    x, sigma, cond, uncond = _inputs(b=2, f=3)
    denoiser = EpsVideoDenoiser(temporal_unet, AC)
    assert denoiser(x.half(), sigma, cond=cond.half(), uncond=uncond.half()).dtype == torch.float16
    with pytest.raises(CCDMError, match=r"accepted: \(2, T, D\) or \(2, 3, T, D\)"):
        denoiser(x, sigma, cond=cond[:1])
    with pytest.raises(CCDMError, match="cond tokens"):
        denoiser(x, sigma, cond=cond, uncond=torch.zeros(2, 14, 8))
    with pytest.raises(CCDMError, match="one per video"):
        denoiser(x, torch.ones(3), cond=cond)
    with pytest.raises(CCDMError, match="cfg_scale"):
        EpsVideoDenoiser(temporal_unet, AC, cfg_scale=-1)
