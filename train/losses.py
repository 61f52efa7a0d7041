"""CCDM's training loss (eq. 13): epsilon-MSE, temporal-neighbour term and keyframe term."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

# Every tensor of a video here is laid out `b c f h w` (the engine's latent layout); masks and per-frame values are
# `b f`. Eq. 13 as printed writes its three terms with the same epsilon and indexes frames and timesteps with the same
# letter; the project reads it as follows (DESIGN.md, "loss eq. 13"):
#
# - main term: || eps - eps_hat ||^2 over all frames (eq. 6);
# - temporal term (eq. 7): for each frame n and neighbour n+i, 1 <= |i| <= k, the error of the *difference* between
#   neighbouring frames, || (eps_n - eps_{n+i}) - (eps_hat_n - eps_hat_{n+i}) ||^2, averaged. It ignores an error
#   shared by all frames and penalises errors that change from frame to frame, i.e. flicker;
# - keyframe term (eq. 8): a clip gets random keyframes; the model's clean-latent prediction
#   x0_hat = (x_t - sqrt(1 - a) eps_hat) / sqrt(a) is pinned to the true latent at keyframes (the keyframe path used at
#   inference), optionally fused (the engine's multi-frame fusion; --train-fusion), and compared with the true latent on
#   the other frames, each weighted by 1 / (1 + distance to the nearest keyframe): frames near a keyframe must agree
#   with it most. Keyframe terms are computed with x0 errors, which grow as 1/SNR at high noise; the loop weights each
#   clip by min(SNR, gamma) (`min_snr_weights`) so the term stays on the scale of the eps term.

def eps_mse(eps_hat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Eq. 6: mean squared error of the predicted noise over all frames and elements."""
    return (eps_hat.float() - eps.float()).pow(2).mean()


def temporal_neighbour_loss(eps_hat: torch.Tensor, eps: torch.Tensor, k: int) -> torch.Tensor:
    """Eq. 7: mean of ||(eps_n - eps_{n+i}) - (eps_hat_n - eps_hat_{n+i})||^2 over frames n and 1 <= |i| <= k.

    Pairs (n, n+i) and (n+i, n) are the same squared difference, so the mean over ordered pairs equals the mean
    over unordered ones. Zero for a single frame.
    """
    error = eps.float() - eps_hat.float()
    frames = error.shape[2]
    total, count = error.new_zeros(()), 0
    for i in range(1, min(int(k), frames - 1) + 1):
        diff = error[:, :, i:] - error[:, :, :-i]
        total = total + diff.pow(2).sum()
        count += diff.numel()
    return total / count if count else total


def predicted_x0(x_t: torch.Tensor, eps_hat: torch.Tensor, alphas_cumprod_t: torch.Tensor) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - a) eps_hat) / sqrt(a), with one alphas_cumprod value `a` per clip (`b`)."""
    a = alphas_cumprod_t.to(torch.float32).view(-1, 1, 1, 1, 1)
    return (x_t.float() - (1.0 - a).sqrt() * eps_hat.float()) / a.sqrt()


def pin_keyframes(x0_hat: torch.Tensor, x0: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """The keyframe path: a keyframe pins its frame, so the prediction there is the true latent."""
    mask = key_mask[:, None, :, None, None]
    return torch.where(mask, x0.to(x0_hat.dtype), x0_hat)


def keyframe_weights(key_mask: torch.Tensor) -> torch.Tensor:
    """`b f` weights 1 / (1 + d_n), d_n = frames to the nearest keyframe; 0 at keyframes and in clips without any.

    Each clip's weights are scaled to sum to its number of non-key frames.
    """
    frames = key_mask.shape[1]
    index = torch.arange(frames, device=key_mask.device, dtype=torch.float32)
    distance = (index[:, None] - index[None, :]).abs()  # [n, j] = |n - j|
    distance = distance.expand(key_mask.shape[0], frames, frames).masked_fill(~key_mask[:, None, :], float("inf"))
    nearest = distance.min(dim=2).values
    weights = torch.where(key_mask, torch.zeros_like(nearest), 1.0 / (1.0 + nearest))
    non_key = (~key_mask).sum(dim=1, keepdim=True).float()
    total = weights.sum(dim=1, keepdim=True)
    return torch.where(total > 0, weights * non_key / total.clamp_min(1e-12), torch.zeros_like(weights))


def keyframe_loss(x0_pred: torch.Tensor, x0: torch.Tensor, key_mask: torch.Tensor,
                  clip_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Eq. 8 (project reading): distance-weighted MSE of the (pinned, fused) x0 on non-key frames.

    Averaged over the clips that have keyframes and non-key frames (0 when there are none); `clip_weights` (`b`)
    optionally scales each clip (e.g. min-SNR weights).
    """
    weights = keyframe_weights(key_mask)
    per_frame = (x0_pred.float() - x0.float()).pow(2).mean(dim=(1, 3, 4))  # b f
    non_key = (~key_mask).sum(dim=1)
    valid = key_mask.any(dim=1) & (non_key > 0)
    per_clip = (weights * per_frame).sum(dim=1) / non_key.clamp_min(1).float()
    if clip_weights is not None:
        per_clip = per_clip * clip_weights.float()
    if not bool(valid.any()):
        return per_clip.sum() * 0.0  # keeps the graph (and every parameter's grad) without a value
    return per_clip[valid].mean()


def min_snr_weights(alphas_cumprod_t: torch.Tensor, gamma: float) -> Optional[torch.Tensor]:
    """min(SNR, gamma) per clip, SNR = a / (1 - a): bounds an x0 error (which grows as 1/SNR in eps units) by the
    eps error's scale at high noise (Hang et al. 2023, "Min-SNR weighting"). None when gamma is 0 (no weighting)."""
    if not gamma:
        return None
    a = alphas_cumprod_t.double()
    return (a / (1.0 - a)).clamp(max=float(gamma)).float()


def sample_key_mask(videos: int, frames: int, prob: float, generator: torch.Generator) -> torch.Tensor:
    """`b f` bool: with probability `prob` a clip gets 1..max(1, frames // 8) distinct random keyframes."""
    mask = torch.zeros(videos, frames, dtype=torch.bool)
    draws = torch.rand(videos, generator=generator)
    for b in range(videos):
        if draws[b] >= prob:
            continue
        count = int(torch.randint(1, max(1, frames // 8) + 1, (1,), generator=generator))
        mask[b, torch.randperm(frames, generator=generator)[:count]] = True
    return mask


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """lambda_1, k and lambda_2 of eq. 13, and the keyframe term's per-clip SNR cap."""

    lambda1: float = 0.1
    k: int = 2
    lambda2: float = 0.1
    snr_gamma: float = 5.0


@dataclasses.dataclass
class LossTerms:
    total: torch.Tensor
    eps: torch.Tensor
    temporal: torch.Tensor
    keyframe: torch.Tensor

    def values(self) -> dict:
        return {name: float(getattr(self, name).detach()) for name in ("total", "eps", "temporal", "keyframe")}


def ccdm_loss(eps_hat: torch.Tensor, eps: torch.Tensor, weights: LossWeights,
              x0_pred: Optional[torch.Tensor] = None, x0: Optional[torch.Tensor] = None,
              key_mask: Optional[torch.Tensor] = None, alphas_cumprod_t: Optional[torch.Tensor] = None) -> LossTerms:
    """Eq. 13: eps-MSE + lambda_1 * temporal term + lambda_2 * keyframe term (skipped when lambda_2 is 0)."""
    main = eps_mse(eps_hat, eps)
    temporal = temporal_neighbour_loss(eps_hat, eps, weights.k) if weights.lambda1 else main.new_zeros(())
    keyframe = main.new_zeros(())
    if weights.lambda2 and x0_pred is not None:
        clip_weights = None if alphas_cumprod_t is None else min_snr_weights(alphas_cumprod_t, weights.snr_gamma)
        keyframe = keyframe_loss(x0_pred, x0, key_mask, clip_weights)
    total = main + weights.lambda1 * temporal + weights.lambda2 * keyframe
    return LossTerms(total, main, temporal, keyframe)
