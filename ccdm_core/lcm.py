"""The LCM multistep sampler (Luo et al. 2023, "Latent Consistency Models", alg. 3), in the sigma parametrisation.

The consistency function f(x_t, t) = c_skip(t) x_t + c_out(t) x0(x_t, t) (boundary conditions of Song et al. 2023,
c_skip(0) = 1, c_out(0) = 0) is evaluated at a few timesteps of the skipping schedule: the model was distilled on
`original_steps` (50) evenly spaced training timesteps t_i = (i + 1) * T // 50 - 1, and `steps` of them are taken
from the top, every `50 // steps`-th. After each evaluation but the last, fresh noise brings the estimate to the
next timestep: x_{t'} = sqrt(a') f + sqrt(1 - a') z. With x = x_VP / sqrt(a) (the form every sampler here uses,
x = x0 + sigma eps), x_VP = x / sqrt(1 + sigma^2) and the re-noising is x' = f + sigma' z.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Optional

import torch

from .errors import CCDMError

ORIGINAL_STEPS = 50  # the distillation's timestep grid (LCM's "original_inference_steps")
SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0  # LCM evaluates the boundary scalings at t / 0.1
RECOMMENDED = {"steps": (4, 8), "cfg_scale": (1.0, 2.0)}


def lcm_timesteps(num_timesteps: int, steps: int, original_steps: int = ORIGINAL_STEPS) -> list:
    """The `steps` training timesteps LCM evaluates, decreasing: every (original_steps // steps)-th of the
    distillation grid (i + 1) * (num_timesteps // original_steps) - 1, from the top."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= original_steps:
        raise CCDMError(f"steps with the LCM sampler must be an integer in 1..{original_steps} (4-8 recommended), "
                        f"got {steps!r}")
    k = num_timesteps // original_steps
    if k < 1:
        raise CCDMError(f"the LCM sampler needs at least {original_steps} training timesteps, got {num_timesteps}")
    grid = [(i + 1) * k - 1 for i in range(original_steps)]
    return grid[::-1][:: original_steps // steps][:steps]


def lcm_sigmas(alphas_cumprod: torch.Tensor, steps: int, original_steps: int = ORIGINAL_STEPS) -> torch.Tensor:
    """steps + 1 decreasing fp32 sigmas (the skipping schedule's timesteps, then 0) for `sample_lcm`."""
    ac = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
    t = torch.tensor(lcm_timesteps(int(ac.numel()), steps, original_steps))
    sigmas = ((1 - ac[t]) / ac[t]).sqrt()
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float32)


def boundary_scalings(t: float, sigma_data: float = SIGMA_DATA,
                      timestep_scaling: float = TIMESTEP_SCALING) -> tuple:
    """(c_skip, c_out) of the consistency parametrisation at timestep t: c_skip(0) = 1, c_out(0) = 0."""
    scaled = float(t) * timestep_scaling
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / math.sqrt(scaled**2 + sigma_data**2)
    return c_skip, c_out


def sample_lcm(model, x, sigmas, *, extra_args=None, callback=None, noise_sampler=None,
               sigma_to_t: Optional[Callable] = None):
    """LCM multistep sampling over a denoiser `model(x, sigma, **extra_args) -> x0` (x = x0 + sigma eps).

    `sigma_to_t(sigma_tensor) -> t` gives the timestep of each sigma for the boundary scalings (the model's
    schedule; see lcm_sigmas); `noise_sampler(sigma, sigma_next)` gives the fresh unit noise of each step.
    """
    from .sampling import _check_sigmas, _model_sigma, _report  # lazily: sampling registers this sampler

    values, extra = _check_sigmas(sigmas), dict(extra_args or {})
    if sigma_to_t is None:
        raise CCDMError("sample_lcm needs sigma_to_t (the model schedule's sigma -> timestep)")
    if noise_sampler is None and values[1] > 0:  # non-increasing: the first step already re-noises
        raise CCDMError("sample_lcm needs noise_sampler (e.g. video_noise_sampler(x, generators)): LCM draws "
                        "fresh noise after every step but the last")
    total = len(values) - 1
    for i in range(total):
        sigma, sigma_next = values[i], values[i + 1]
        sigma_in = _model_sigma(x, sigma)
        denoised = model(x, sigma_in, **extra)
        t = float(torch.as_tensor(sigma_to_t(sigma_in)).reshape(-1)[0])
        c_skip, c_out = boundary_scalings(t)
        consistent = denoised * c_out + x * (c_skip / math.sqrt(1.0 + sigma**2))
        _report(callback, i, total, x, sigma, sigma_next, consistent)
        x = consistent
        if sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * sigma_next
    return x
