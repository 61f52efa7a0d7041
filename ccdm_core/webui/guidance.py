"""Fusion, keyframe, camera-move and keyframe-prompt guidance inside the WebUI's CFG denoiser.

Two callbacks are registered once (entry.py) and do nothing unless a CCDM run has made its `Sampling` current
for the duration of its sampling call (`active_guidance`, cleared in a finally):
- `on_cfg_denoiser`: the per-frame text conditioning of the keyframe prompts (`frame_conditioning`) replaces the
  cond rows (never the uncond rows), and the denoiser's input x and timestep are kept for the step's after-CFG;
- `on_cfg_after_cfg`: `guide_denoised`, the same steps as the standalone `FeedbackDenoiser` on `b c f h w`, applied
  to the WebUI's `(b f) c h w` batch one video at a time (frames of different videos never mix). k-diffusion
  samplers hand over the clean-latent prediction x0; DDIM, PLMS and UniPC (WebUI 1.6.0's timestep samplers) a
  noise prediction eps, which `guide_eps` turns into x0 with the sampler's alphas, guides, and turns back.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import torch
from einops import rearrange
from torch.nn import functional as F

from ..errors import CCDMError
from ..feedback import guide_clip
from ..fusion import FusionSettings, PatchFusion
from ..keyframes import Keyframe, encode_keyframes, prompt_schedule_weights
from .settings import CCDMSettings, CCDMSettingsError

_CURRENT: List["Sampling"] = []  # the run now sampling (at most one)


@dataclasses.dataclass(eq=False)
class Guidance:
    """What the after-CFG step needs: frames per video, fusion settings, keyframe latents `c h w`, the module, the
    camera move (None: off) and its strength."""

    num_frames: int
    fusion: FusionSettings
    key_latents: Dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)
    key_strengths: Dict[int, float] = dataclasses.field(default_factory=dict)
    module: Optional[PatchFusion] = None
    keyframe_end: float = 0.6  # as FeedbackDenoiser
    camera: Optional[str] = None  # a move name ("zoom in"), resolved for the run; None = off
    camera_strength: float = 0.0
    _sized: Dict[tuple, "Guidance"] = dataclasses.field(default_factory=dict, init=False, repr=False)

    @property
    def keyframes(self) -> List[int]:
        return sorted(self.key_latents)

    def does_nothing(self) -> bool:
        return self.fusion.strength == 0 and not self.key_latents and not self.camera_acts()

    def camera_acts(self) -> bool:
        return self.camera is not None and self.camera_strength > 0 and self.num_frames > 1

    def at_size(self, height: int, width: int) -> "Guidance":
        """This guidance with keyframe latents resized to `height x width` (hires fix samples a larger latent)."""
        if all(t.shape[-2:] == (height, width) for t in self.key_latents.values()):
            return self
        if (height, width) not in self._sized:
            resized = {f: F.interpolate(t[None].float(), size=(height, width), mode="bilinear",
                                        align_corners=False)[0] for f, t in self.key_latents.items()}
            self._sized[(height, width)] = dataclasses.replace(self, key_latents=resized)
        return self._sized[(height, width)]


def fusion_settings(settings: CCDMSettings) -> FusionSettings:
    return FusionSettings(strength=settings.fusion_strength, mode=settings.fusion_mode,
                          cross_frame_strength=settings.cross_frame_strength)


def _as_data_url(kf: Keyframe) -> Keyframe:
    """Keyframe images are data URLs or bare base64 (never file paths: the API must not read server files)."""
    if kf.image is None or kf.image.startswith("data:"):
        return kf
    return dataclasses.replace(kf, image="data:image/png;base64," + "".join(kf.image.split()))


def build_guidance(settings: CCDMSettings, vae_encode: Callable[[torch.Tensor], torch.Tensor], width: int,
                   height: int, extras: Optional[Dict[str, torch.Tensor]] = None,
                   device: Optional[torch.device] = None, prompt: str = "") -> Guidance:
    """A run's guidance: keyframe images VAE-encoded once (`vae_encode`: pixels `1 3 h w` in -1..1 -> scaled
    latent), the fusion module from the motion module's extras (fp32 on `device`) when it has one, the camera move
    (`settings.camera_move(prompt)`: `prompt` is the run's first prompt, read under camera `auto`)."""
    kfs = [_as_data_url(kf) for kf in settings.keyframes]
    try:
        latents = encode_keyframes(vae_encode, kfs, width, height, 1.0) if any(k.image for k in kfs) else {}
    except CCDMError as err:
        raise CCDMSettingsError("keyframes", str(err)) from None
    module = PatchFusion.from_extras(extras or {}) if settings.fusion_strength > 0 else None
    if module is not None:
        module = module.to(device=device, dtype=torch.float32)
    camera = settings.camera_move(prompt)
    return Guidance(settings.frames, fusion_settings(settings),
                    {f: t.to(device) if device is not None else t for f, t in latents.items()},
                    {kf.frame: float(kf.strength) for kf in settings.keyframes if kf.frame in latents}, module,
                    camera=camera, camera_strength=settings.camera_strength if camera is not None else 0.0)


def guide_video(denoised: torch.Tensor, step: int, total: int, g: Guidance) -> torch.Tensor:
    """The standalone engine's frame-feedback step (`guide_clip`) on one video `b c f h w`."""
    return guide_clip(denoised, step, total, g.fusion, g.key_latents, g.key_strengths, g.module, g.keyframe_end,
                      g.camera, g.camera_strength)


def guide_denoised(x: torch.Tensor, step: int, total: int, g: Guidance) -> torch.Tensor:
    """The WebUI's denoised batch `(b f) c h w` after CFG -> guided, same layout; each video on its own."""
    if g.does_nothing():
        return x
    if x.shape[0] % g.num_frames:
        raise ValueError(f"a batch of {x.shape[0]} items is not a whole number of {g.num_frames}-frame videos")
    g = g.at_size(x.shape[-2], x.shape[-1])
    videos = rearrange(x, "(b f) c h w -> b c f h w", f=g.num_frames)
    out = torch.cat([guide_video(videos[i:i + 1], step, max(total, 1), g) for i in range(videos.shape[0])])
    return rearrange(out, "b c f h w -> (b f) c h w")


def with_anchor(g: Guidance, latent: torch.Tensor) -> Guidance:
    """Anchor-first: the plain model's frame 0 (`c h w`) as the keyframe at frame 0 with strength 1."""
    return dataclasses.replace(g, key_latents={**g.key_latents, 0: latent.float()},
                               key_strengths={**g.key_strengths, 0: 1.0})


# ---------------------------------------------------------------- noise-prediction samplers (DDIM, PLMS, UniPC)

def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def alpha_at(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """alphas_cumprod at the timesteps `t` (b,): the table's entry at whole t (DDIM, PLMS), and between whole t the
    log-linear interpolation of UniPC's discrete noise schedule (it calls the model at fractional t)."""
    table = alphas_cumprod.to(_work_dtype(alphas_cumprod.device))
    t = t.to(table.device, table.dtype).reshape(-1).clamp(0, len(table) - 1)
    low = t.floor()
    frac = t - low
    lo = low.long()
    hi = (lo + 1).clamp(max=len(table) - 1)
    between = torch.lerp(table[lo].log(), table[hi].log(), frac).exp()
    return torch.where(frac == 0, table[lo], between)


def eps_to_x0(x: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The clean latent a noise prediction implies: x0 = (x - sqrt(1 - a) eps) / sqrt(a)."""
    return (x - (1 - alpha).sqrt() * eps) / alpha.sqrt()


def x0_to_eps(x: torch.Tensor, x0: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The noise prediction that implies `x0`: eps = (x - sqrt(a) x0) / sqrt(1 - a)."""
    return (x - alpha.sqrt() * x0) / (1 - alpha).sqrt()


def guide_eps(eps: torch.Tensor, x: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor, step: int,
              total: int, g: Guidance, mask: Optional[torch.Tensor] = None,
              init_latent: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`guide_denoised` for a sampler whose after-CFG value is a noise prediction: x0 from (x, eps) with the
    sampler's alphas at `t`, guided, and back. eps' = x0_to_eps(x, x0') is written as eps + sqrt(a / (1 - a))
    (x0 - x0'), the same value, so that elements the guidance leaves alone stay bit-identical. With an img2img
    `mask` the guidance sees x0 with the masked part set to `init_latent`, as the k-diffusion samplers' value is."""
    if g.does_nothing():
        return eps
    work = _work_dtype(eps.device)
    alpha = alpha_at(alphas_cumprod, t).to(eps.device)[:, None, None, None]
    x0 = eps_to_x0(x.to(eps.device, work), eps.to(work), alpha).float()
    seen = x0 if mask is None else torch.lerp(x0, init_latent.to(x0), mask.to(x0))
    change = (x0 - guide_denoised(seen, step, total, g).float()).to(work)
    return (eps.to(work) + (alpha / (1 - alpha)).sqrt() * change).to(eps.dtype)


# ---------------------------------------------------------------- keyframe prompts (per-frame text conditioning)

def prompt_keys(keyframes: Sequence[Keyframe]) -> Dict[int, Optional[str]]:
    """The engine's prompt schedule: each keyframe prompt at its frame and, unless a keyframe prompt is at frame 0,
    the main prompt there (None: the WebUI's own conditioning row). Empty without keyframe prompts."""
    keys: Dict[int, Optional[str]] = {kf.frame: kf.prompt for kf in keyframes if kf.prompt and kf.prompt.strip()}
    if keys:
        keys.setdefault(0, None)
    return dict(sorted(keys.items()))


def pad_tokens(cond: torch.Tensor, length: int, empty: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`T D` -> `length D`: whole chunks of the empty prompt's conditioning (`E D`, as the WebUI pads cond/uncond),
    else copies of the last token (as the WebUI stacks prompts of different lengths)."""
    missing = length - cond.shape[0]
    if missing <= 0:
        return cond
    if empty is not None and missing % empty.shape[0] == 0:
        filler = empty.to(cond).repeat(missing // empty.shape[0], 1)
    else:
        filler = cond[-1:].expand(missing, -1)
    return torch.cat([cond, filler])


def _blend(conds: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """sum_k w_k cond_k; a row taken whole (bit-exact) where one weight is 1."""
    used = [(c, float(w)) for c, w in zip(conds, weights) if float(w) != 0.0]
    if len(used) == 1 and used[0][1] == 1.0:
        return used[0][0]
    return sum(c.float() * w for c, w in used).to(conds[0].dtype)


def frame_conditioning(text_cond: torch.Tensor, weights: torch.Tensor, key_conds: Sequence[Optional[torch.Tensor]],
                       empty: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The cond rows `(b f) T D` with each frame's interpolated keyframe-prompt conditioning: row i is frame
    i % f; `weights` f x k over the keys; key k's conditioning `T_k D`, None = the row's own (main prompt). Rows of
    different token lengths are padded to the longest (`pad_tokens`); each row reads only itself and the keys."""
    frames = weights.shape[0]
    if text_cond.shape[0] % frames:
        raise ValueError(f"{text_cond.shape[0]} cond rows are not a whole number of {frames}-frame videos")
    if text_cond.dim() == 2:  # SDXL's pooled `vector` rows `(b f) V`: no tokens to pad
        return torch.stack([_blend([row if c is None else c.to(row) for c in key_conds], weights[i % frames])
                            for i, row in enumerate(text_cond)])
    length = max([text_cond.shape[1]] + [c.shape[0] for c in key_conds if c is not None])
    keys = [None if c is None else pad_tokens(c.to(text_cond), length, empty) for c in key_conds]
    rows = []
    for i, row in enumerate(text_cond):
        own = pad_tokens(row, length, empty)
        rows.append(_blend([own if c is None else c for c in keys], weights[i % frames]))
    return torch.stack(rows)


class CondDict(dict):
    """SDXL's conditioning dict with the `shape` of its `crossattn` rows, as the WebUI's CFG denoiser reads it."""

    @property
    def shape(self):
        return self["crossattn"].shape


@dataclasses.dataclass(eq=False)
class PromptSchedule:
    """A run's keyframe prompts: per-frame weights `f k` over the keys, and each key's conditioning `T D` at a
    sampling step (`cond_at(prompt, step)`, so the WebUI's prompt editing works in keyframe prompts)."""

    keys: Dict[int, Optional[str]]
    weights: torch.Tensor
    cond_at: Callable[[str, int], torch.Tensor]
    empty: Optional[torch.Tensor] = None

    def apply(self, text_cond, step: int):
        """SD1's cond rows `(b f) T D`, or SDXL's dict: its `crossattn` rows and `vector` rows each interpolated
        (the key conds are dicts too); other entries (an inpainting model's `c_concat`) are kept."""
        conds = [None if prompt is None else self.cond_at(prompt, step) for prompt in self.keys.values()]
        if not isinstance(text_cond, Mapping):
            return frame_conditioning(text_cond, self.weights, conds, self.empty)
        return CondDict({key: frame_conditioning(value, self.weights, [None if c is None else c[key] for c in conds],
                                                 self.empty if key == "crossattn" else None)
                         if key in ("crossattn", "vector") else value for key, value in text_cond.items()})


def build_prompt_schedule(keyframes: Sequence[Keyframe], num_frames: int, cond_at: Callable[[str, int], torch.Tensor],
                          empty: Optional[torch.Tensor] = None) -> Optional[PromptSchedule]:
    """The run's prompt schedule, or None when no keyframe has a prompt."""
    keys = prompt_keys(keyframes)
    if not keys:
        return None
    weights = torch.from_numpy(prompt_schedule_weights(num_frames, list(keys))).float()
    return PromptSchedule(keys, weights, cond_at, empty)


# ---------------------------------------------------------------- the run now sampling, and the callbacks

X0, EPS, UNSUPPORTED = "x0", "eps", "unsupported"


@dataclasses.dataclass(frozen=True)
class Prediction:
    """What the sampler's after-CFG value is: the clean latent (k-diffusion), a noise prediction with the alphas
    the sampler converts with (DDIM, PLMS, UniPC), or unsupported (`why` names the sampler)."""

    kind: str
    alphas: Optional[torch.Tensor] = None
    why: str = ""
    mask: Optional[torch.Tensor] = None  # img2img (eps samplers mask their input, not their output)
    init_latent: Optional[torch.Tensor] = None


@dataclasses.dataclass(eq=False)
class Sampling:
    """The current run's guidance and prompt schedule, how to read its sampler, and the step's denoiser input."""

    guidance: Optional[Guidance] = None
    prompts: Optional[PromptSchedule] = None
    prediction: Callable[[], Prediction] = lambda: Prediction(X0)
    denoiser_input: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
    said: Set[str] = dataclasses.field(default_factory=set)

    def say_once(self, message: str) -> None:
        if message not in self.said:
            self.said.add(message)
            print(f"CCDM: {message}")

    def take_input(self, rows: int) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """The last `rows` items of this step's denoiser input (x, timestep): the WebUI puts the plain x last."""
        kept, self.denoiser_input = self.denoiser_input, None
        if kept is None or kept[0].shape[0] < rows:
            return None
        x, t = kept
        return x[-rows:], torch.as_tensor(t).reshape(-1)[-rows:]


@contextlib.contextmanager
def active_guidance(g: Optional[Guidance], prompts: Optional[PromptSchedule] = None,
                    prediction: Optional[Callable[[], Prediction]] = None) -> Iterator[None]:
    """Make the run current for the block (a None or no-op guidance and no prompts: nothing is made current)."""
    g = None if g is None or g.does_nothing() else g
    if g is None and prompts is None:
        yield
        return
    sampling = Sampling(g, prompts, prediction or (lambda: Prediction(X0)))
    _CURRENT.append(sampling)
    try:
        yield
    finally:
        if sampling in _CURRENT:
            _CURRENT.remove(sampling)


def current_sampling() -> Optional[Sampling]:
    return _CURRENT[-1] if _CURRENT else None


def current_guidance() -> Optional[Guidance]:
    sampling = current_sampling()
    return sampling.guidance if sampling is not None else None


def on_cfg_denoiser(params) -> None:
    """`script_callbacks.on_cfg_denoiser`: keyframe prompts replace the cond rows (`params.text_cond`, SD1:
    `[b, T, 768]`; SDXL: a dict whose `crossattn` and `vector` rows both change; the uncond rows stay as they are); the input x and timestep are kept for the after-CFG step."""
    sampling = current_sampling()
    if sampling is None:
        return
    if sampling.guidance is not None:
        sampling.denoiser_input = (params.x, params.sigma)
    if sampling.prompts is not None:
        params.text_cond = sampling.prompts.apply(params.text_cond, int(params.sampling_step))


def on_cfg_after_cfg(params) -> None:
    """`script_callbacks.on_cfg_after_cfg`: params.x (after CFG: x0 or eps, by sampler) is replaced by the guided
    prediction."""
    sampling = current_sampling()
    if sampling is None or sampling.guidance is None:
        return
    step, total, g = int(params.sampling_step), int(params.total_sampling_steps), sampling.guidance
    prediction = sampling.prediction()
    if prediction.kind == X0:
        params.x = guide_denoised(params.x, step, total, g)
    elif prediction.kind == EPS:
        seen = sampling.take_input(params.x.shape[0])
        if seen is None:
            sampling.say_once("fusion, keyframe and camera guidance skipped: the denoiser's input was not seen this "
                              "step")
            return
        params.x = guide_eps(params.x, seen[0], seen[1], prediction.alphas, step, total, g, prediction.mask,
                             prediction.init_latent)
    else:
        sampling.say_once(f"fusion, keyframe and camera guidance skipped: {prediction.why} (cross-frame attention "
                          "still applies)")
