"""FreeInit (Wu et al. 2023): resample a video from noise whose spatio-temporal low band comes from the last result.

Each pass samples a clean latent z0 from unit noise n (the sampler starts at x = n * sigma_max). The result is
diffused back to the first timestep with the video's initial noise eps0 (pass 0's noise), the low band of that
noisy latent is kept and its high band is replaced by fresh Gaussian noise; the next pass samples from the mix.
In the k-diffusion parametrisation x = x0 + sigma * eps, the diffused latent is x_T = z0 + sigma_max * eps0; a
sampler input n' reaches it when n' * sigma_max = x_T, so the unit-scale noise is z0 / sigma_max + eps0
(the VP latent x_T / sqrt(1 + sigma_max^2) differs from it by a factor 1 - 2e-3 for SD's sigma_max ~ 14.6).
Latents are `b c f h w`; the 3-D FFT runs over (f, h, w) in fp32.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import re
from typing import Any, Callable, Dict, Optional

import torch

from .errors import CCDMError

FREEINIT_FILTERS = ("butterworth", "gaussian", "box", "ideal")
FREEINIT_NOISE = ("fresh", "initial")
ITERATIONS_RANGE = (1, 5)
ORDER_RANGE = (1, 16)
DEFAULT_ORDER = 4
INFOTEXT_KEY = "CCDM FreeInit"
_FFT_DIMS = (-3, -2, -1)
_LN2 = math.log(2.0)
_INFOTEXT = re.compile(r"^\s*(\d+)/([a-z]+)/([^/\s]+)/([^/\s]+)/([a-z]+)(?:/(\d+))?\s*$")


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    """An integer (not a bool) in lo..hi, or a CCDMError naming the field and the range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise CCDMError(f"freeinit_{name} must be an integer in {lo}..{hi}, got {value!r}")


def _check_frequency(name: str, value: Any) -> None:
    """A finite number (not a bool) in (0, 1], or a CCDMError naming the field and the range."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if not ok or not 0 < value <= 1:
        raise CCDMError(f"freeinit_{name} must be a normalised frequency in (0, 1], got {value!r}")


def _check_choice(name: str, value: Any, accepted: tuple) -> None:
    """One of the accepted strings, or a CCDMError naming the field and the accepted values."""
    if not isinstance(value, str) or value not in accepted:
        raise CCDMError(f"freeinit_{name} {value!r} unknown; accepted: {', '.join(accepted)}")


@dataclasses.dataclass(frozen=True)
class FreeInitSettings:
    """FreeInit's settings (Wu et al. 2023): total passes, low-pass filter and stop frequencies, high-band source.

    `noise="fresh"` (default) takes the high band from new Gaussian noise each pass, as FreeInit does: new high
    frequencies let the details be sampled afresh instead of re-deriving the same ones; `"initial"` reuses the
    initial noise's high band, the deterministic variant (no extra draws; the next noise is then exactly
    eps0 + lowpass(z0) / sigma_max).
    """

    iterations: int = 1  # total sampling passes; 1 = off
    filter: str = "butterworth"
    spatial: float = 0.25  # normalised stop frequency along h and w (1 = Nyquist)
    temporal: float = 0.25  # normalised stop frequency along frames
    noise: str = "fresh"
    order: int = DEFAULT_ORDER  # butterworth order

    def __post_init__(self):
        _check_int("iterations", self.iterations, *ITERATIONS_RANGE)
        _check_choice("filter", self.filter, FREEINIT_FILTERS)
        _check_frequency("spatial", self.spatial)
        _check_frequency("temporal", self.temporal)
        _check_choice("noise", self.noise, FREEINIT_NOISE)
        _check_int("order", self.order, *ORDER_RANGE)

    @property
    def enabled(self) -> bool:
        """More than one pass: FreeInit changes the result."""
        return self.iterations > 1


def _frequency_grid(frames: int, height: int, width: int, settings: FreeInitSettings, device) -> tuple:
    """Per-axis frequencies in units of each stop frequency (fftfreq * 2 is 1 at Nyquist), broadcast to (f, h, w)."""
    axes = []
    for n, stop, shape in ((frames, settings.temporal, (-1, 1, 1)), (height, settings.spatial, (1, -1, 1)),
                           (width, settings.spatial, (1, 1, -1))):
        axes.append((torch.fft.fftfreq(n, device=device, dtype=torch.float32) * (2.0 / stop)).reshape(shape))
    return tuple(axes)


def low_pass_mask(frames: int, height: int, width: int, settings: FreeInitSettings, device=None) -> torch.Tensor:
    """FreeInit's spatio-temporal low-pass filter: (f, h, w) fp32 in [0, 1], 1 at DC, in torch.fft's (unshifted) order.

    With r the frequency in units of the stop frequencies: ideal 1 inside the ellipsoid r <= 1, box 1 inside the
    cuboid (every axis within its stop), gaussian 2^-(r^2) and butterworth 1 / (1 + r^(2 order)), both 0.5 at r = 1.
    """
    for name, n in (("frames", frames), ("height", height), ("width", width)):
        _check_int(name, n, 1, 1 << 20)
    t, h, w = _frequency_grid(frames, height, width, settings, device)
    r2 = t**2 + h**2 + w**2
    if settings.filter == "ideal":
        mask = (r2 <= 1.0).float()
    elif settings.filter == "box":
        mask = ((t.abs() <= 1.0) & (h.abs() <= 1.0) & (w.abs() <= 1.0)).float()
    elif settings.filter == "gaussian":
        mask = torch.exp(-_LN2 * r2)
    else:
        mask = 1.0 / (1.0 + r2**settings.order)
    return mask.expand(frames, height, width).contiguous()


def _check_video(name: str, tensor: torch.Tensor) -> None:
    """A `b c f h w` tensor, or a CCDMError naming it."""
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 5:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise CCDMError(f"freeinit {name} must be a (b, c, f, h, w) latent video, got {shape}")


def mix_frequencies(low_from: torch.Tensor, high_from: torch.Tensor, mask: torch.Tensor,
                    high_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """FreeInit's frequency mix: ifft(fft(low_from) * mask + fft(high_from) * (1 - mask)), 3-D FFT over (f, h, w).

    `high_mask` replaces (1 - mask) as the weight of high_from. Math in fp32 (fp64 stays fp64); the result is real
    and has low_from's dtype and device.
    """
    _check_video("low_from", low_from)
    _check_video("high_from", high_from)
    if tuple(high_from.shape) != tuple(low_from.shape):
        raise CCDMError(f"freeinit high_from {tuple(high_from.shape)} must match low_from {tuple(low_from.shape)}")
    for name, m in (("mask", mask), ("high_mask", mask if high_mask is None else high_mask)):
        if tuple(m.shape) != tuple(low_from.shape[-3:]):
            raise CCDMError(f"freeinit {name} {tuple(m.shape)} must be (f, h, w) = {tuple(low_from.shape[-3:])}")
    dtype = torch.promote_types(low_from.dtype, torch.float32)
    low = torch.fft.fftn(low_from.to(dtype), dim=_FFT_DIMS)
    high = torch.fft.fftn(high_from.to(device=low_from.device, dtype=dtype), dim=_FFT_DIMS)
    m = mask.to(device=low_from.device, dtype=dtype)
    hm = 1 - m if high_mask is None else high_mask.to(device=low_from.device, dtype=dtype)
    mixed = torch.fft.ifftn(low * m + high * hm, dim=_FFT_DIMS).real
    return mixed.to(low_from.dtype)


def _check_sigma_max(sigma_max: Any) -> float:
    """The first sampling sigma: a finite number > 0."""
    if isinstance(sigma_max, torch.Tensor) and sigma_max.numel() == 1:
        sigma_max = float(sigma_max)
    if isinstance(sigma_max, bool) or not isinstance(sigma_max, numbers.Real) or not 0 < sigma_max < math.inf:
        raise CCDMError(f"freeinit sigma_max must be a finite number > 0 (the sampler's sigmas[0]), got {sigma_max!r}")
    return float(sigma_max)


def diffused_noise(denoised: torch.Tensor, initial_noise: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """Forward diffusion to sigma_max in unit scale: (z0 + sigma_max * eps0) / sigma_max (Karras et al. 2022 form)."""
    sigma_max = _check_sigma_max(sigma_max)
    noise = initial_noise.to(device=denoised.device, dtype=torch.promote_types(denoised.dtype, torch.float32))
    return denoised.to(noise.dtype) / sigma_max + noise


def reinitialised_noise(denoised: torch.Tensor, initial_noise: torch.Tensor, fresh_noise: Optional[torch.Tensor],
                        settings: FreeInitSettings, sigma_max: float) -> torch.Tensor:
    """FreeInit's noise reinitialisation: low band of the result diffused with eps0, high band of fresh (or eps0) noise.

    Unit scale (the sampler starts at it times sigma_max), in initial_noise's dtype; `fresh_noise` may be None
    when settings.noise is "initial". Fresh noise is weighted sqrt(1 - mask^2), not (1 - mask): independent of
    eps0, it then keeps every frequency's noise variance at 1 (mask^2 + 1 - mask^2) where a soft mask would lose
    up to half of it in the transition band (std 0.76 for gaussian at stop 1); binary masks are unchanged.
    """
    _check_video("denoised", denoised)
    _check_video("initial_noise", initial_noise)
    if tuple(denoised.shape) != tuple(initial_noise.shape):
        raise CCDMError(f"freeinit denoised {tuple(denoised.shape)} must match the noise {tuple(initial_noise.shape)}")
    high = initial_noise if settings.noise == "initial" else fresh_noise
    if high is None:
        raise CCDMError('freeinit noise "fresh" needs fresh_noise, a unit normal tensor like the initial noise')
    f, h, w = denoised.shape[-3:]
    mask = low_pass_mask(f, h, w, settings, denoised.device)
    high_mask = (1 - mask**2).clamp(min=0).sqrt() if settings.noise == "fresh" else None
    mixed = mix_frequencies(diffused_noise(denoised, initial_noise, sigma_max), high, mask, high_mask)
    return mixed.to(device=initial_noise.device, dtype=initial_noise.dtype)


def _check_pass_output(name: str, value: Any, like: torch.Tensor, index: int) -> None:
    """A pass's tensor must have the initial noise's shape."""
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(like.shape):
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise CCDMError(f"freeinit {name} of pass {index} must have shape {tuple(like.shape)}, got {got}")


def freeinit_passes(sample_pass: Callable[[torch.Tensor, int], torch.Tensor], initial_noise: torch.Tensor,
                    sigma_max: float, settings: FreeInitSettings,
                    fresh_noise: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """FreeInit's iterative sampling (Wu et al. 2023): sample, re-initialise the noise, sample again; the last result.

    `sample_pass(noise, i)` samples pass i from unit noise (its sampler starts at noise * sigma_max) and returns
    the denoised latent; `fresh_noise(i)` draws unit noise for pass i (1..iterations-1) from the videos'
    generators, called only with noise "fresh". Every result is re-diffused with `initial_noise` (pass 0's), so the
    low band is the forward-diffusion marginal of that result alone, never a sum over earlier passes' results.
    Exceptions from either callable propagate at once (interrupts).
    """
    _check_video("initial_noise", initial_noise)
    sigma_max = _check_sigma_max(sigma_max)
    result = sample_pass(initial_noise, 0)
    for index in range(1, settings.iterations):
        _check_pass_output("result", result, initial_noise, index - 1)
        fresh = None
        if settings.noise == "fresh":
            fresh = fresh_noise(index)
            _check_pass_output("fresh noise", fresh, initial_noise, index)
        noise = reinitialised_noise(result, initial_noise, fresh, settings, sigma_max)
        result = sample_pass(noise, index)
    return result


def _number(value: float) -> str:
    """Shortest exact text of a float, without a trailing .0 (0.25 -> "0.25", 1.0 -> "1")."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def freeinit_infotext(settings: Optional[FreeInitSettings]) -> Dict[str, str]:
    """`{"CCDM FreeInit": "3/butterworth/0.25/0.25/fresh"}` when enabled (a 6th field: a non-default order), else {}."""
    if settings is None or not settings.enabled:
        return {}
    fields = [str(settings.iterations), settings.filter, _number(settings.spatial), _number(settings.temporal),
              settings.noise]
    if settings.order != DEFAULT_ORDER:
        fields.append(str(settings.order))
    return {INFOTEXT_KEY: "/".join(fields)}


def _float_field(name: str, text: str) -> float:
    """A number read from the infotext, or a CCDMError naming freeinit and the field."""
    try:
        return float(text)
    except ValueError:
        raise CCDMError(f"freeinit_{name} {text!r} is not a number; accepted: a frequency in (0, 1]") from None


def parse_freeinit(text: str) -> Dict[str, Any]:
    """The inverse of freeinit_infotext: `3/butterworth/0.25/0.25/fresh[/ORDER]` -> FreeInitSettings fields."""
    m = _INFOTEXT.match(str(text).lower())
    if not m:
        raise CCDMError(f"freeinit: cannot read {text!r}; expected ITERATIONS/FILTER/SPATIAL/TEMPORAL/NOISE[/ORDER], "
                        "e.g. 3/butterworth/0.25/0.25/fresh")
    fields = {"iterations": int(m.group(1)), "filter": m.group(2), "spatial": _float_field("spatial", m.group(3)),
              "temporal": _float_field("temporal", m.group(4)), "noise": m.group(5),
              "order": int(m.group(6)) if m.group(6) else DEFAULT_ORDER}
    FreeInitSettings(**fields)  # validate: errors name the field and the accepted range
    return fields
