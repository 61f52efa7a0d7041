"""Samplers over a denoiser callable in the sigma parametrisation x = x0 + sigma * eps (Karras et al. 2022).

Model contract: `model(x, sigma, **extra_args) -> denoised`, x is `b c f h w`, sigma has shape (b,).
Callback contract: `callback(info)` with exactly the keys of CALLBACK_KEYS; it may raise to interrupt sampling.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Optional, Sequence

import torch
from einops import rearrange, repeat

from .errors import CCDMError
from .lcm import sample_lcm
from .schedules import sigmas_from_alphas_cumprod

SIGMA_KINDS = ("uniform", "karras")
CALLBACK_KEYS = ("i", "total", "x", "sigma", "sigma_next", "denoised")
SEED_RANGE = (0, 2**64 - 1)

NoiseSampler = Callable[[float, float], torch.Tensor]


class DiscreteSchedule:
    """A discrete VP schedule seen as sigmas, with continuous timesteps by interpolation in log-sigma."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        ac = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
        if ac.ndim != 1 or ac.numel() < 2:
            raise CCDMError(f"alphas_cumprod must be a 1-D tensor of at least 2 values, got shape {tuple(ac.shape)}")
        if not bool(((ac > 0) & (ac < 1)).all()) or not bool((ac[1:] < ac[:-1]).all()):
            raise CCDMError("alphas_cumprod must be strictly decreasing with values in (0, 1)")
        self.alphas_cumprod = ac
        self.sigmas = sigmas_from_alphas_cumprod(ac)  # float64, increasing with t
        self.log_sigmas = self.sigmas.log()

    @property
    def num_timesteps(self) -> int:
        return int(self.sigmas.numel())

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous timestep of each sigma (linear in log-sigma between the discrete steps; clamped to 0..T-1)."""
        sigma = torch.as_tensor(sigma)
        log_s = sigma.detach().to("cpu", torch.float64).clamp(self.sigma_min, self.sigma_max).log()
        hi = torch.searchsorted(self.log_sigmas, log_s.contiguous()).clamp(1, self.num_timesteps - 1)
        lo = hi - 1
        w = (log_s - self.log_sigmas[lo]) / (self.log_sigmas[hi] - self.log_sigmas[lo])
        return (lo + w).to(device=sigma.device, dtype=_out_dtype(sigma))

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Sigma at continuous timesteps t (linear in log-sigma between the discrete steps; clamped to 0..T-1)."""
        t = torch.as_tensor(t)
        tt = t.detach().to("cpu", torch.float64).clamp(0, self.num_timesteps - 1)
        lo = tt.floor().long().clamp(max=self.num_timesteps - 2)
        log_s = torch.lerp(self.log_sigmas[lo], self.log_sigmas[lo + 1], tt - lo)
        return log_s.exp().to(device=t.device, dtype=_out_dtype(t))


def _out_dtype(value: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else (fp16 included: t ~ 999 needs more than 11 bits) becomes float32."""
    return torch.float64 if value.dtype == torch.float64 else torch.float32


def _as_schedule(schedule: DiscreteSchedule | torch.Tensor) -> DiscreteSchedule:
    return schedule if isinstance(schedule, DiscreteSchedule) else DiscreteSchedule(schedule)


def _check_steps(steps: int, upper: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= upper:
        raise CCDMError(f"steps must be an integer in 1..{upper}, got {steps!r}")
    return int(steps)


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float32)


def get_sigmas(
    schedule: DiscreteSchedule | torch.Tensor, steps: int, kind: str = "uniform", *, rho: float = 7.0
) -> torch.Tensor:
    """steps+1 decreasing fp32 sigmas ending in 0: `uniform` in timestep (T-1 .. 0) or `karras` (EDM eq. 5, rho)."""
    schedule = _as_schedule(schedule)
    steps = _check_steps(steps, 10000)
    if kind == "uniform":
        t = torch.linspace(schedule.num_timesteps - 1, 0, steps, dtype=torch.float64)
        return _append_zero(schedule.t_to_sigma(t))
    if kind == "karras":
        if not rho > 0:
            raise CCDMError(f"rho must be > 0, got {rho!r}")
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
        lo, hi = schedule.sigma_min ** (1 / rho), schedule.sigma_max ** (1 / rho)
        return _append_zero((hi + ramp * (lo - hi)) ** rho)
    raise CCDMError(f"unknown sigma kind {kind!r}; accepted: {', '.join(SIGMA_KINDS)}")


def ddim_sigmas(schedule: DiscreteSchedule | torch.Tensor, steps: int) -> torch.Tensor:
    """Sigmas at DDIM's "uniform" timesteps (Song et al. 2021; c = T // steps, t = range(0, T, c) + 1), then 0.

    There are len(range(0, T, c)) steps, which exceeds `steps` when T % steps != 0 (e.g. T=1000, steps=3 -> 4).
    Timesteps are clamped to T-1 (steps == T would otherwise index T). The final step goes to sigma = 0 rather
    than to sigma(t=0) ~ 0.03: a step to 0 returns the model's clean estimate x0 itself instead of x0 plus 0.03
    of its own predicted noise, which is what the sampler is for; the difference is below VAE resolution.
    """
    schedule = _as_schedule(schedule)
    total = schedule.num_timesteps
    c = total // _check_steps(steps, total)
    timesteps = (torch.arange(0, total, c) + 1).clamp(max=total - 1).flip(0)
    return _append_zero(schedule.sigmas[timesteps])


def _check_sigmas(sigmas: torch.Tensor) -> list[float]:
    """Validate a sampler's sigmas: 1-D, >= 2 values, non-increasing, positive except possibly the last."""
    sig = torch.as_tensor(sigmas).detach().to("cpu", torch.float32)
    if sig.ndim != 1 or sig.numel() < 2:
        raise CCDMError(f"sigmas must be a 1-D tensor of at least 2 values, got shape {tuple(sig.shape)}")
    values = sig.tolist()
    if not all(math.isfinite(v) for v in values) or min(values[:-1]) <= 0 or values[-1] < 0:
        raise CCDMError("sigmas must be finite, > 0 before the last and >= 0 at the last")
    if any(b > a for a, b in zip(values, values[1:])):
        raise CCDMError("sigmas must be non-increasing")
    return values


def _check_eta(eta: float, upper: float) -> float:
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 0 <= eta <= upper:
        raise CCDMError(f"eta must be a number in [0, {upper}], got {eta!r}")
    return float(eta)


def _model_sigma(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The model's sigma argument: one fp32 value per video, shape (b,)."""
    return torch.full((x.shape[0],), sigma, dtype=torch.float32, device=x.device)


def _report(callback, i: int, total: int, x, sigma: float, sigma_next: float, denoised) -> None:
    if callback is not None:
        callback({"i": i, "total": total, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})


def _ancestral_split(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up): DDPM/DDIM posterior step in sigma form, sigma_next^2 = sigma_down^2 + sigma_up^2."""
    if sigma_next == 0 or eta == 0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * sigma_next * math.sqrt(max(0.0, 1 - (sigma_next / sigma) ** 2)))
    return math.sqrt(max(0.0, sigma_next**2 - sigma_up**2)), sigma_up


def _require_noise(noise_sampler: Optional[NoiseSampler], eta: float, name: str) -> None:
    if eta > 0 and noise_sampler is None:
        raise CCDMError(f"{name} with eta > 0 needs noise_sampler (e.g. video_noise_sampler(x, generators))")


def sample_euler(model, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None):
    """Euler's method on the probability-flow ODE dx/dsigma = (x - D(x)) / sigma (Karras et al. 2022, alg. 2)."""
    values, extra = _check_sigmas(sigmas), dict(extra_args or {})
    del noise_sampler  # deterministic; accepted for a uniform sampler signature
    total = len(values) - 1
    for i in range(total):
        sigma, sigma_next = values[i], values[i + 1]
        denoised = model(x, _model_sigma(x, sigma), **extra)
        _report(callback, i, total, x, sigma, sigma_next, denoised)
        d = (x - denoised) / sigma
        x = x + d * (sigma_next - sigma)
    return x


def _ancestral_steps(model, x, values, extra, callback, noise_sampler, eta):
    """Step to sigma_down along the model's direction, then add fresh noise of std sigma_up."""
    total = len(values) - 1
    for i in range(total):
        sigma, sigma_next = values[i], values[i + 1]
        denoised = model(x, _model_sigma(x, sigma), **extra)
        _report(callback, i, total, x, sigma, sigma_next, denoised)
        sigma_down, sigma_up = _ancestral_split(sigma, sigma_next, eta)
        x = denoised + (x - denoised) / sigma * sigma_down
        if sigma_up > 0:
            x = x + noise_sampler(sigma, sigma_next) * sigma_up
    return x


def sample_euler_ancestral(model, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=1.0):
    """Euler to sigma_down, then fresh noise of std sigma_up (ancestral sampling, Ho et al. 2020 in sigma form)."""
    values, extra = _check_sigmas(sigmas), dict(extra_args or {})
    eta = _check_eta(eta, math.inf)
    _require_noise(noise_sampler, eta, "sample_euler_ancestral")
    return _ancestral_steps(model, x, values, extra, callback, noise_sampler, eta)


def sample_ddim(model, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None, eta=0.0):
    """DDIM (Song et al. 2021) written for x = x0 + sigma * eps, i.e. the VP latent divided by sqrt(alpha_cumprod).

    DDIM's x' = sqrt(a') x0 + sqrt(1 - a' - s^2) eps + s z, divided by sqrt(a') with sigma^2 = (1 - a) / a, is
    x' = x0 + sqrt(sigma'^2 - up^2) eps + up z with up = eta sigma' sqrt(1 - sigma'^2 / sigma^2).
    With eta = 0, up = 0 and no noise is drawn: x' = x0 + sigma' eps is a fixed function of x, so the sampler is
    deterministic; and since eps = (x - x0) / sigma, x' = x + (sigma' - sigma)(x - x0) / sigma, one Euler step.
    (For 0 < eta <= 1 it is likewise Euler ancestral; DDIM differs from "euler" by its sigmas, see ddim_sigmas.)
    """
    values, extra = _check_sigmas(sigmas), dict(extra_args or {})
    eta = _check_eta(eta, 1.0)
    _require_noise(noise_sampler, eta, "sample_ddim")
    return _ancestral_steps(model, x, values, extra, callback, noise_sampler, eta)


SAMPLERS = {"ddim": sample_ddim, "euler": sample_euler, "euler_a": sample_euler_ancestral,
            "lcm": sample_lcm}


def get_sampler(name: str) -> Callable:
    """The sampler function registered under `name` in SAMPLERS."""
    try:
        return SAMPLERS[name]
    except (KeyError, TypeError):
        raise CCDMError(f"unknown sampler {name!r}; accepted: {', '.join(SAMPLERS)}") from None


def video_generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One seeded torch.Generator per video (per-sample generators, as in EDM), never the global RNG."""
    lo, hi = SEED_RANGE
    if len(seeds) == 0:
        raise CCDMError("seeds must hold one integer per video, got none")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not lo <= seed <= hi:
            raise CCDMError(f"seed must be an integer in {lo}..{hi}, got {seed!r}")
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


def _check_generators(generators: Sequence[torch.Generator], videos: int) -> None:
    if len(generators) != videos:
        raise CCDMError(f"need one generator per video: got {len(generators)} for {videos} videos")


def _draw_videos(shape_cfhw, generators, dtype, device) -> torch.Tensor:
    """Stack one standard normal draw per video, each from its own generator (fp32 on the generator's device)."""
    draws = [torch.randn(tuple(shape_cfhw), generator=g, device=g.device, dtype=torch.float32) for g in generators]
    return torch.stack([d.to(device=device, dtype=dtype) for d in draws])


def initial_noise(shape_bcfhw, generators, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Unit normal `b c f h w` noise, video i from generators[i] (independent of the batch); scale by sigmas[0]."""
    if len(shape_bcfhw) != 5:
        raise CCDMError(f"shape must be (b, c, f, h, w), got {tuple(shape_bcfhw)}")
    _check_generators(generators, shape_bcfhw[0])
    return _draw_videos(shape_bcfhw[1:], generators, dtype, device)


def video_noise_sampler(x_like: torch.Tensor, generators: Sequence[torch.Generator]) -> NoiseSampler:
    """noise_sampler(sigma, sigma_next) -> unit noise like x_like, video i drawn from generators[i]."""
    _check_generators(generators, x_like.shape[0])
    shape, dtype, device = tuple(x_like.shape[1:]), x_like.dtype, x_like.device

    def noise_sampler(sigma, sigma_next):
        return _draw_videos(shape, generators, dtype, device)

    return noise_sampler


def _check_cfg_scale(cfg_scale: float) -> float:
    if isinstance(cfg_scale, bool) or not isinstance(cfg_scale, numbers.Real) or not 0 <= cfg_scale < math.inf:
        raise CCDMError(f"cfg_scale must be a finite number >= 0, got {cfg_scale!r}")
    return float(cfg_scale)


def _frame_context(context: torch.Tensor, videos: int, num_frames: int, name: str) -> torch.Tensor:
    """One context per frame, `(b f) T D`, from a per-video `(b, T, D)` or per-frame `(b, f, T, D)` prompt."""
    if context.ndim == 3 and context.shape[0] == videos:
        return repeat(context, "b t d -> (b f) t d", f=num_frames)
    if context.ndim == 4 and tuple(context.shape[:2]) == (videos, num_frames):
        return rearrange(context, "b f t d -> (b f) t d")
    raise CCDMError(
        f"{name} has shape {tuple(context.shape)}; accepted: ({videos}, T, D) or ({videos}, {num_frames}, T, D)"
    )


class EpsVideoDenoiser:
    """An epsilon-prediction UNet as a video denoiser D(x, sigma) with classifier-free guidance (Ho & Salimans 2022).

    `unet_call(x_flat, t_flat, context_flat, num_frames) -> eps_flat` works on `(n f) c h w` frames, frames of a
    video contiguous; it is called once per step on `[cond videos..., uncond videos...]`, never mixing videos.
    """

    def __init__(self, unet_call: Callable, alphas_cumprod: torch.Tensor, cfg_scale: float = 7.0):
        self.unet_call = unet_call
        self.schedule = _as_schedule(alphas_cumprod)
        self.cfg_scale = _check_cfg_scale(cfg_scale)

    def __call__(self, x, sigma, *, cond, uncond=None, cfg_scale=None) -> torch.Tensor:
        """denoised `b c f h w` = x - sigma * eps(x / sqrt(sigma^2 + 1), t(sigma)), guided when uncond is given."""
        # 1. Check the layout and gather one context per frame.
        if x.ndim != 5:
            raise CCDMError(f"x must be a (b, c, f, h, w) video latent, got shape {tuple(x.shape)}")
        b, f = x.shape[0], x.shape[2]
        sigma = torch.as_tensor(sigma, device=x.device).to(torch.float32).reshape(-1)
        if sigma.numel() not in (1, b):
            raise CCDMError(f"sigma must have shape ({b},) (one per video) or be a scalar, got {sigma.numel()} values")
        sigma = sigma.expand(b)
        scale = self.cfg_scale if cfg_scale is None else _check_cfg_scale(cfg_scale)
        contexts = [_frame_context(cond, b, f, "cond")]
        if uncond is not None:
            contexts.append(_frame_context(uncond, b, f, "uncond"))
            if contexts[0].shape[1:] != contexts[1].shape[1:]:
                raise CCDMError(
                    f"cond tokens {tuple(contexts[0].shape[1:])} and uncond tokens {tuple(contexts[1].shape[1:])} "
                    "differ; accepted: the same (T, D), e.g. pad the shorter prompt to the same 77-token chunks"
                )
        # 2. One UNet batch of n = len(contexts) * b videos: [cond videos, uncond videos], scalings in fp32.
        n = len(contexts) * b
        x32 = torch.cat([x.float()] * len(contexts))
        sigma_n = torch.cat([sigma] * len(contexts))
        c_in = rearrange((sigma_n**2 + 1).rsqrt(), "n -> n 1 1 1 1")
        x_flat = rearrange(x32 * c_in, "n c f h w -> (n f) c h w").to(x.dtype)
        t_flat = repeat(self.schedule.sigma_to_t(sigma_n), "n -> (n f)", f=f)
        eps_flat = self.unet_call(x_flat, t_flat, torch.cat(contexts), f)
        if tuple(eps_flat.shape) != tuple(x_flat.shape):
            raise CCDMError(f"unet_call returned shape {tuple(eps_flat.shape)}; expected {tuple(x_flat.shape)}")
        # 3. denoised = x - sigma * eps per video, then guidance uncond + scale * (cond - uncond) in fp32.
        eps = rearrange(eps_flat.float(), "(n f) c h w -> n c f h w", n=n, f=f)
        denoised = x32 - eps * rearrange(sigma_n, "n -> n 1 1 1 1")
        if uncond is None:
            return denoised.to(x.dtype)
        d_cond, d_uncond = denoised[:b], denoised[b:]
        return (d_uncond + (d_cond - d_uncond) * scale).to(x.dtype)
