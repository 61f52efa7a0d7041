"""Discrete DDPM noise schedules (Ho et al. 2020; SD's scaled-linear betas) and a restoring swap of a model's."""
from __future__ import annotations

import contextlib
import math
import numbers
from typing import Iterator

import torch

from .errors import CCDMError

BETA_SCHEDULES = ("linear", "scaled_linear")
TIMESTEPS_RANGE = (2, 10000)


def _check_schedule_args(schedule: str, beta_start: float, beta_end: float, timesteps: int) -> None:
    """Validate the beta schedule arguments with messages that name the accepted values."""
    if schedule not in BETA_SCHEDULES:
        raise CCDMError(f"unknown beta schedule {schedule!r}; accepted: {', '.join(BETA_SCHEDULES)}")
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise CCDMError(f"{name} must be a finite number in (0, 1), got {value!r}")
    if not 0.0 < beta_start < beta_end < 1.0:
        raise CCDMError(f"betas must satisfy 0 < beta_start < beta_end < 1, got {beta_start} and {beta_end}")
    lo, hi = TIMESTEPS_RANGE
    if isinstance(timesteps, bool) or not isinstance(timesteps, numbers.Integral) or not lo <= timesteps <= hi:
        raise CCDMError(f"timesteps must be an integer in {lo}..{hi}, got {timesteps!r}")


def make_betas(
    schedule: str = "scaled_linear", beta_start: float = 0.00085, beta_end: float = 0.012, timesteps: int = 1000
) -> torch.Tensor:
    """DDPM betas: `linear` (Ho et al. 2020) or `scaled_linear` (linear in sqrt(beta), as in SD), float64."""
    _check_schedule_args(schedule, beta_start, beta_end, timesteps)
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, int(timesteps), dtype=torch.float64)
    return torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), int(timesteps), dtype=torch.float64) ** 2


def make_alphas_cumprod(
    schedule: str = "scaled_linear", beta_start: float = 0.00085, beta_end: float = 0.012, timesteps: int = 1000
) -> torch.Tensor:
    """alphas_cumprod[t] = prod_{s<=t} (1 - beta_s) (Ho et al. 2020), float64."""
    return torch.cumprod(1.0 - make_betas(schedule, beta_start, beta_end, timesteps), dim=0)


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Noise-to-signal ratio sigma = sqrt((1 - a) / a) of a VP schedule (Karras et al. 2022, VP -> VE form)."""
    ac = torch.as_tensor(alphas_cumprod)
    return ((1.0 - ac) / ac).sqrt()


def _check_replacement(old: object, new: object) -> torch.Tensor:
    """Return `new` as a tensor with the dtype, device and shape of the model's current alphas_cumprod."""
    if not isinstance(old, torch.Tensor):
        raise CCDMError(f"model.alphas_cumprod must be a torch.Tensor to be swapped, got {type(old).__name__}")
    new_t = torch.as_tensor(new)
    if tuple(new_t.shape) != tuple(old.shape):
        raise CCDMError(
            f"alphas_cumprod shape {tuple(new_t.shape)} does not match the model's {tuple(old.shape)}; "
            "accepted: a tensor with the model's number of timesteps"
        )
    if not bool(torch.isfinite(new_t).all()) or not bool(((new_t > 0) & (new_t <= 1)).all()):
        raise CCDMError("alphas_cumprod values must be finite and in (0, 1]")
    return new_t.detach().to(device=old.device, dtype=old.dtype).clone()


@contextlib.contextmanager
def swap_alphas_cumprod(model: object, alphas_cumprod: torch.Tensor) -> Iterator[torch.Tensor]:
    """Set `model.alphas_cumprod` (attribute or buffer) for the block; restore the original object by identity."""
    if not hasattr(model, "alphas_cumprod"):
        raise CCDMError(f"{type(model).__name__} has no alphas_cumprod; accepted: a model with that attribute or buffer")
    original = model.alphas_cumprod
    replacement = _check_replacement(original, alphas_cumprod)
    # setattr goes through nn.Module.__setattr__, so a registered buffer stays a buffer (same slot, same persistence).
    setattr(model, "alphas_cumprod", replacement)
    try:
        yield replacement
    finally:
        setattr(model, "alphas_cumprod", original)
        if model.alphas_cumprod is not original:
            raise RuntimeError("swap_alphas_cumprod: model.alphas_cumprod was not restored to the original tensor")
