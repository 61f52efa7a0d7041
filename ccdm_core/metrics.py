"""Video quality metrics: flow motion magnitude (paper table 1), warp error, flicker, SSIM/PSNR (table 2).

Definitions (frames are uint8 RGB, shape (f, h, w, 3); pair t is frames t -> t+1):

* Flow: OpenCV DIS optical flow, preset MEDIUM, on BT.601 grey frames. The forward flow of pair t maps pixel p of
  frame t to p + f_fw(p) in frame t+1; the backward flow maps frame t+1 to frame t.
* Motion magnitude (table 1): the per-pair mean of |f_fw| over all pixels, summed over the f-1 pairs
  (accumulated), divided by the frame diagonal sqrt(h^2 + w^2), in percent. A clip panned by s pixels per frame
  scores s * (f - 1) / diagonal * 100.
* Valid pixels: p + f_fw(p) lies inside frame t+1 and the flows agree forward-backward (Sundaram et al. 2010,
  as used by Ruder et al. 2016): |f_fw(p) + f_bw(p + f_fw(p))|^2 < 0.01 (|f_fw(p)|^2 + |f_bw(p + f_fw(p))|^2) + 0.5.
* Warp error: frame t+1 is warped back onto frame t (bilinear, at p + f_fw(p)); the mean absolute RGB
  difference over valid pixels, 0-255, averaged over pairs.
* Flicker index: |mean luma of frame t - mean luma of warped frame t+1| over valid pixels, 0-255, averaged over
  pairs. Alternating brightness of +d levels scores about d; steady motion scores about 0.
* SSIM / PSNR to a reference still (table 2): skimage.metrics per frame on RGB with data_range 255, averaged over
  frames. PSNR is +inf for a frame equal to the reference; JSON has no inf, so evaluate_frames reports it as null.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from .errors import CCDMError

FLOW_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
CONSISTENCY_ALPHA = 0.01  # relative tolerance of the forward-backward check
CONSISTENCY_BETA = 0.5  # absolute tolerance in squared pixels
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601, as cv2's RGB2GRAY
SSIM_WIN_SIZE = 7  # skimage's default window; frames must be at least this large


@dataclass(frozen=True)
class FlowFields:
    """Forward (t -> t+1) and backward (t+1 -> t) DIS flows, each (f-1, h, w, 2) float32 as (dx, dy)."""

    forward: np.ndarray
    backward: Optional[np.ndarray] = None


@dataclass(frozen=True)
class PairMetrics:
    """Per-pair (t, t+1) values, each an (f-1,) float64 array; warp/flicker are nan where no pixel is valid."""

    motion_pct: np.ndarray
    warp_error: np.ndarray
    flicker: np.ndarray
    valid_fraction: np.ndarray


# ---------------------------------------------------------------- inputs


def check_frames(frames) -> np.ndarray:
    """Check a clip is uint8 (f, h, w, 3) with f >= 1; return it C-contiguous."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[:3]) < 1:
        raise CCDMError(f"frames must be a uint8 array of shape (f, h, w, 3) with f >= 1, "
                        f"got {frames.dtype} {tuple(frames.shape)}")
    return np.ascontiguousarray(frames)


def check_reference(reference, frames: np.ndarray) -> np.ndarray:
    """Check a reference still is uint8 (h, w, 3) of the frames' size; the error names both sizes."""
    ref = np.asarray(reference)
    if ref.dtype != np.uint8 or ref.ndim != 3 or ref.shape[-1] != 3:
        raise CCDMError(f"reference must be a uint8 RGB image of shape (h, w, 3), got {ref.dtype} {tuple(ref.shape)}")
    (h, w), (rh, rw) = frames.shape[1:3], ref.shape[:2]
    if (rh, rw) != (h, w):
        raise CCDMError(f"reference image is {rw}x{rh} but the video frames are {w}x{h} (width x height); "
                        "resize the reference to the video size")
    return ref


def _check_flows(flows: FlowFields, frames: np.ndarray, backward: bool) -> FlowFields:
    f, h, w = frames.shape[:3]
    want = (f - 1, h, w, 2)
    fields = [flows.forward] + ([flows.backward] if backward else [])
    if any(field is None or field.shape != want for field in fields):
        raise CCDMError(f"flows do not fit the frames: need forward{' and backward' if backward else ''} "
                        f"flow of shape {want}; compute them with flow_fields(frames)")
    return flows


# ---------------------------------------------------------------- optical flow


def _grey(frames: np.ndarray) -> np.ndarray:
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames])


def flow_fields(frames, backward: bool = True) -> FlowFields:
    """DIS optical flow (OpenCV, preset MEDIUM) between consecutive frames, forward and optionally backward."""
    frames = check_frames(frames)
    grey = _grey(frames)
    dis = cv2.DISOpticalFlow_create(FLOW_PRESET)
    shape = (len(frames) - 1,) + frames.shape[1:3] + (2,)
    fw = np.zeros(shape, np.float32)
    bw = np.zeros(shape, np.float32) if backward else None
    for t in range(len(frames) - 1):
        fw[t] = dis.calc(grey[t], grey[t + 1], None)
        if backward:
            bw[t] = dis.calc(grey[t + 1], grey[t], None)
    return FlowFields(fw, bw)


def _sample_points(flow: np.ndarray):
    """Target coordinates p + flow(p) as float32 maps for cv2.remap, and whether they lie inside the frame."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return map_x, map_y, inside


def warp_back(image: np.ndarray, flow_fw: np.ndarray) -> np.ndarray:
    """Backward warping: out(p) = image(p + flow_fw(p)), bilinear, float32 (frame t+1 onto frame t)."""
    map_x, map_y, _ = _sample_points(flow_fw)
    return cv2.remap(image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def consistency_mask(flow_fw: np.ndarray, flow_bw: np.ndarray) -> np.ndarray:
    """Forward-backward flow consistency (Sundaram et al. 2010) and in-frame targets, as an (h, w) bool mask."""
    map_x, map_y, inside = _sample_points(flow_fw)
    bw_at = cv2.remap(flow_bw, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    round_trip = np.sum((flow_fw + bw_at) ** 2, axis=-1)
    tolerance = CONSISTENCY_ALPHA * (np.sum(flow_fw ** 2, axis=-1) + np.sum(bw_at ** 2, axis=-1)) + CONSISTENCY_BETA
    return inside & (round_trip < tolerance)


# ---------------------------------------------------------------- flow-based metrics


def _diagonal(frames: np.ndarray) -> float:
    return math.hypot(frames.shape[1], frames.shape[2])


def _pair_motion_pct(frames: np.ndarray, forward: np.ndarray) -> np.ndarray:
    magnitude = np.linalg.norm(forward.astype(np.float64), axis=-1)  # (f-1, h, w)
    return magnitude.mean(axis=(1, 2)) / _diagonal(frames) * 100.0


def _luma(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) @ LUMA_WEIGHTS


def pair_metrics(frames, flows: Optional[FlowFields] = None) -> PairMetrics:
    """Per-pair motion (% of diagonal), flow-warped error and flicker (0-255), and the valid-pixel fraction."""
    frames = check_frames(frames)
    flows = _check_flows(flows, frames, backward=True) if flows is not None else flow_fields(frames)
    n = len(frames) - 1
    warp, flicker, valid = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n)
    for t in range(n):
        mask = consistency_mask(flows.forward[t], flows.backward[t])
        valid[t] = mask.mean()
        if not mask.any():
            continue
        current = frames[t].astype(np.float32)
        warped = warp_back(frames[t + 1], flows.forward[t])
        warp[t] = np.abs(current - warped)[mask].mean()
        flicker[t] = abs(float(_luma(current)[mask].mean()) - float(_luma(warped)[mask].mean()))
    return PairMetrics(_pair_motion_pct(frames, flows.forward), warp, flicker, valid)


def _mean_or_nan(values: np.ndarray) -> float:
    """Mean over the finite entries; nan when there are none (0 pairs counts as 0: a still clip)."""
    if values.size == 0:
        return 0.0
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def motion_magnitude_pct(frames, flows: Optional[FlowFields] = None) -> float:
    """Optical-flow motion magnitude (table 1): summed per-pair mean |flow| over the diagonal, in percent."""
    frames = check_frames(frames)
    forward = _check_flows(flows, frames, False).forward if flows is not None else flow_fields(frames, False).forward
    return float(_pair_motion_pct(frames, forward).sum())


def warp_error(frames, flows: Optional[FlowFields] = None) -> float:
    """Flow-warped error: mean |frame t - warped frame t+1| over consistent pixels (0-255), mean over pairs."""
    return _mean_or_nan(pair_metrics(frames, flows).warp_error)


def flicker_index(frames, flows: Optional[FlowFields] = None) -> float:
    """Flicker index: mean |luma change| between frame t and motion-compensated frame t+1 (0-255)."""
    return _mean_or_nan(pair_metrics(frames, flows).flicker)


CAMERA_AXES = ("pan", "tilt", "zoom", "rotate")


def camera_flow(frames, axis: str, flows: Optional[FlowFields] = None) -> float:
    """Mean optical flow (pixels per frame) along a camera move's axis: +x for pans, +y (down) for tilts, outward
    from the centre for zooms, tangential (positive clockwise on screen) for rotations."""
    if axis not in CAMERA_AXES:
        raise CCDMError(f"unknown camera axis {axis!r}; accepted: {', '.join(CAMERA_AXES)}")
    frames = check_frames(frames)
    if len(frames) < 2:
        return 0.0
    forward = _check_flows(flows, frames, False).forward if flows is not None else flow_fields(frames, False).forward
    h, w = forward.shape[1:3]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - (w - 1) / 2, yy - (h - 1) / 2
    r = np.sqrt(dx ** 2 + dy ** 2) + 1e-6
    fx, fy = forward[..., 0], forward[..., 1]
    along = {"pan": fx, "tilt": fy, "zoom": (fx * dx + fy * dy) / r, "rotate": (fy * dx - fx * dy) / r}[axis]
    return float(along.mean())


# ---------------------------------------------------------------- reference metrics (table 2)


def ssim_per_frame(frames, reference) -> np.ndarray:
    """SSIM (skimage, RGB, data_range 255, 7x7 window) of every frame against a reference still."""
    frames = check_frames(frames)
    ref = check_reference(reference, frames)
    if min(frames.shape[1:3]) < SSIM_WIN_SIZE:
        raise CCDMError(f"SSIM needs frames of at least {SSIM_WIN_SIZE}x{SSIM_WIN_SIZE} pixels, "
                        f"got {frames.shape[2]}x{frames.shape[1]}")
    return np.array([structural_similarity(frame, ref, data_range=255, channel_axis=-1, win_size=SSIM_WIN_SIZE)
                     for frame in frames], np.float64)


def psnr_per_frame(frames, reference) -> np.ndarray:
    """PSNR in dB (data_range 255) of every frame against a reference still; +inf for an identical frame."""
    frames = check_frames(frames)
    ref = check_reference(reference, frames)
    out = np.empty(len(frames), np.float64)
    for i, frame in enumerate(frames):
        # skimage divides by a zero MSE (and warns) for identical images; the limit is +inf.
        out[i] = np.inf if np.array_equal(frame, ref) else peak_signal_noise_ratio(ref, frame, data_range=255)
    return out


def ssim_to_reference(frames, reference) -> float:
    """Mean SSIM over frames against a reference still (table 2)."""
    return float(ssim_per_frame(frames, reference).mean())


def psnr_to_reference(frames, reference) -> float:
    """Mean PSNR in dB over frames against a reference still (table 2); +inf if any frame equals it."""
    return float(psnr_per_frame(frames, reference).mean())


# ---------------------------------------------------------------- everything at once


def _json_number(value: float, digits: int = 4) -> Optional[float]:
    """Round for JSON; inf and nan become None (JSON has neither)."""
    return round(float(value), digits) if math.isfinite(value) else None


def _json_list(values: np.ndarray) -> list:
    return [_json_number(v) for v in values]


def evaluate_frames(frames, reference=None, per_frame: bool = False) -> dict:
    """All metrics of a clip as a JSON-safe dict; flows are computed once, both directions."""
    # 1. Flow-based metrics, from one forward and one backward flow per pair.
    frames = check_frames(frames)
    ref = check_reference(reference, frames) if reference is not None else None
    pairs = pair_metrics(frames)
    out = {"frames": int(len(frames)), "width": int(frames.shape[2]), "height": int(frames.shape[1]),
           "motion_magnitude_pct": _json_number(pairs.motion_pct.sum()),
           "warp_error": _json_number(_mean_or_nan(pairs.warp_error)),
           "flicker_index": _json_number(_mean_or_nan(pairs.flicker)),
           "flow_valid_fraction": _json_number(pairs.valid_fraction.mean()) if len(frames) > 1 else None}
    notes = []
    if len(frames) == 1:
        notes.append("single frame: no frame pairs, so motion, warp error and flicker are 0")
    elif out["warp_error"] is None:
        notes.append("no pixel passed the forward-backward flow check: warp error and flicker are null")
    # 2. Reference metrics (table 2).
    if ref is not None:
        ssim, psnr = ssim_per_frame(frames, ref), psnr_per_frame(frames, ref)
        out["ssim_to_reference"] = _json_number(ssim.mean())
        out["psnr_to_reference"] = _json_number(psnr.mean())
        if np.isinf(psnr).any():
            notes.append("PSNR is infinite (reported as null) for frames identical to the reference")
    # 3. Optional detail: pair lists have f-1 entries (pair t = frames t, t+1); reference lists have f.
    if per_frame:
        detail = {"motion_pct": _json_list(pairs.motion_pct), "warp_error": _json_list(pairs.warp_error),
                  "flicker": _json_list(pairs.flicker), "flow_valid_fraction": _json_list(pairs.valid_fraction)}
        if ref is not None:
            detail.update(ssim=_json_list(ssim), psnr=_json_list(psnr))
        out["per_frame"] = detail
    out["notes"] = notes
    return out
