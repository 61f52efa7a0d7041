"""Frame interpolation from bidirectional optical flow (OpenCV DIS), occlusion-aware, no downloaded weights.

Between frames a and b, for each time t = k / factor (k = 1 .. factor-1):

* Flows: DIS (preset MEDIUM) a -> b and b -> a on BT.601 grey frames, at most FLOW_MAX_SIDE pixels on the long
  side (larger frames are shrunk for the flow, the flows scaled back up).
* Intermediate flows without splatting: the pixel p at time t came from x = p + v in frame a, where x moved to
  p = x + t * F_ab(x). So v = -t * F_ab(p + v), solved by FIXED_POINT_STEPS fixed-point steps from v = -t * F_ab(p);
  likewise p + u in b with u = -(1 - t) * F_ba(p + u).
* Occlusion: the forward-backward consistency mask of each frame (metrics.consistency_mask) says which of its
  pixels have a match in the other frame. Content at p that b shows without a match in a (disoccluded) is hidden
  in a, so a's weight there drops; and the other way round. Samples from outside a frame get weight 0.
* Blend: weights (1 - t) * visible_in_a and t * visible_in_b, normalised; where both are ~0 the plain
  time-weighted blend (1 - t) * a + t * b takes over smoothly.

cv2 and the metrics module are imported when a flow is first needed, so that check_factor and
interpolated_count stay importable where OpenCV is not installed (inside the WebUI's start-up).
"""
from __future__ import annotations

import numbers
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from .errors import CCDMError
from .video import check_frame

INTERPOLATE_RANGE = (1, 8)  # 1 = off
FLOW_MAX_SIDE = 640  # the flow of larger frames is computed on a shrunk copy
FLOW_MIN_SIDE = 16  # DIS needs frames larger than its patches; smaller ones are edge-padded for the flow
FIXED_POINT_STEPS = 4  # steps of v = -t * F_ab(p + v); 0 would be the plain -t * F_ab(p) approximation
MASK_BLUR_SIGMA = 1.0  # softens the boolean consistency masks (in flow pixels) so weights have no hard seams
FALLBACK_WEIGHT = 1e-3  # share of the time-weighted blend mixed in everywhere (wins where both weights vanish)

Progress = Callable[[int, int], None]


# ---------------------------------------------------------------- options


def check_factor(factor, field: str = "interpolate") -> int:
    """The interpolation factor as an int in INTERPOLATE_RANGE (1 = off); the error names `field`."""
    low, high = INTERPOLATE_RANGE
    whole = isinstance(factor, numbers.Integral) or (isinstance(factor, numbers.Real) and float(factor).is_integer())
    if isinstance(factor, bool) or not whole or not low <= int(factor) <= high:
        raise CCDMError(f"{field} must be a whole number from {low} to {high} (1 = off, 2 doubles the frame rate), "
                        f"got {factor!r}")
    return int(factor)


def interpolated_count(frames: int, factor: int, closed_loop: bool = False) -> int:
    """Frames out for `frames` in: (n - 1) * factor + 1, or n * factor for a closed loop (last -> first too)."""
    factor = check_factor(factor, "factor")
    if isinstance(frames, bool) or not isinstance(frames, numbers.Integral) or frames < 0:
        raise CCDMError(f"frames must be a whole number >= 0, got {frames!r}")
    if frames == 0:
        return 0
    return int(frames) * factor if closed_loop else (int(frames) - 1) * factor + 1


# ---------------------------------------------------------------- flow


def _flow_grey(frame: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Grey frame at the flow size (w, h), edge-padded up to FLOW_MIN_SIDE."""
    import cv2

    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if (grey.shape[1], grey.shape[0]) != size:
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    pad_h, pad_w = max(0, FLOW_MIN_SIDE - size[1]), max(0, FLOW_MIN_SIDE - size[0])
    return np.pad(grey, ((0, pad_h), (0, pad_w)), mode="edge") if pad_h or pad_w else grey


def flow_size(height: int, width: int) -> Tuple[int, int]:
    """The (w, h) the flow is computed at: the frame size, shrunk to FLOW_MAX_SIDE on the long side."""
    scale = min(1.0, FLOW_MAX_SIDE / max(height, width))
    return max(1, round(width * scale)), max(1, round(height * scale))


def pair_flows(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """DIS flows a -> b and b -> a at flow_size, (h', w', 2) float32 in flow pixels."""
    import cv2
    from .metrics import FLOW_PRESET

    size = flow_size(*a.shape[:2])
    ga, gb = _flow_grey(a, size), _flow_grey(b, size)
    dis = cv2.DISOpticalFlow_create(FLOW_PRESET)
    fw, bw = dis.calc(ga, gb, None), dis.calc(gb, ga, None)
    return fw[:size[1], :size[0]].copy(), bw[:size[1], :size[0]].copy()


def _time_flow(flow: np.ndarray, t: float) -> np.ndarray:
    """v with v = -t * flow(p + v): where the pixel at p, time t, sits in the flow's source frame."""
    from .metrics import warp_back

    v = -t * flow
    for _ in range(FIXED_POINT_STEPS):
        v = -t * warp_back(flow, v)
    return v


def _warp_image(image: np.ndarray, v: np.ndarray) -> np.ndarray:
    """out(p) = image(p + v(p)), bicubic (sharper than metrics.warp_back's bilinear at half-pixel shifts)."""
    import cv2

    h, w = v.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(image, xs + v[..., 0], ys + v[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def _inside(v: np.ndarray) -> np.ndarray:
    """1.0 where p + v lies within the frame (half a pixel of slack), else 0.0."""
    h, w = v.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = xs + v[..., 0], ys + v[..., 1]
    return ((x > -0.5) & (x < w - 0.5) & (y > -0.5) & (y < h - 0.5)).astype(np.float32)


def _soft(mask: np.ndarray) -> np.ndarray:
    """A boolean mask as float32 in [0, 1], slightly blurred."""
    import cv2

    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), MASK_BLUR_SIGMA)


# ---------------------------------------------------------------- blending


def _weights(v_a: np.ndarray, v_b: np.ndarray, match_a: np.ndarray, match_b: np.ndarray,
             t: float) -> Tuple[np.ndarray, np.ndarray]:
    """Normalised blend weights of a and b at time t, at flow resolution."""
    from .metrics import warp_back

    visible_in_a = np.clip(warp_back(match_b, v_b), 0, 1) * _inside(v_a)  # b's content there has a match in a
    visible_in_b = np.clip(warp_back(match_a, v_a), 0, 1) * _inside(v_b)
    w_a = (1 - t) * (visible_in_a + FALLBACK_WEIGHT)
    w_b = t * (visible_in_b + FALLBACK_WEIGHT)
    total = w_a + w_b
    return w_a / total, w_b / total


def _to_frame_size(field: np.ndarray, height: int, width: int, is_flow: bool) -> np.ndarray:
    """Resize a flow-resolution field to the frame size; flows are scaled with it."""
    import cv2

    fh, fw = field.shape[:2]
    if (fh, fw) == (height, width):
        return field
    out = cv2.resize(field, (width, height), interpolation=cv2.INTER_LINEAR)
    if is_flow:
        out = out * np.array([width / fw, height / fh], np.float32)
    return out


def _blend_at(a: np.ndarray, b: np.ndarray, flows: Tuple[np.ndarray, ...], t: float) -> np.ndarray:
    """The frame at time t in (0, 1) between a and b, from their flows and match masks."""
    fw, bw, match_a, match_b = flows
    h, w = a.shape[:2]
    v_a, v_b = _time_flow(fw, t), _time_flow(bw, 1 - t)
    w_a, w_b = _weights(v_a, v_b, match_a, match_b, t)
    v_a, v_b = _to_frame_size(v_a, h, w, True), _to_frame_size(v_b, h, w, True)
    w_a, w_b = _to_frame_size(w_a, h, w, False), _to_frame_size(w_b, h, w, False)
    out = _warp_image(a, v_a) * w_a[..., None] + _warp_image(b, v_b) * w_b[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def interpolate_pair(a: np.ndarray, b: np.ndarray, factor: int) -> List[np.ndarray]:
    """The factor - 1 frames strictly between a and b (uint8 (h, w, 3)), at times k / factor."""
    factor = check_factor(factor, "factor")
    a = check_frame(a)
    b = check_frame(b, a.shape, index=1)
    if factor == 1:
        return []
    from .metrics import consistency_mask

    fw, bw = pair_flows(a, b)
    flows = (fw, bw, _soft(consistency_mask(fw, bw)), _soft(consistency_mask(bw, fw)))
    return [_blend_at(a, b, flows, k / factor) for k in range(1, factor)]


# ---------------------------------------------------------------- streams


def _progress_total(frames, factor: int, closed_loop: bool, total: Optional[int]) -> int:
    """Output frames expected from `total` input frames (or len(frames)); 0 when unknown."""
    if total is None and hasattr(frames, "__len__"):
        total = len(frames)
    return interpolated_count(total, factor, closed_loop) if total is not None else 0


def _stream(frames: Iterable[np.ndarray], factor: int, closed_loop: bool,
            report: Callable[[], None]) -> Iterator[np.ndarray]:
    """Each input frame, then the frames between it and the next; holds only the current pair (and frame 0)."""
    source = iter(frames)
    first = next(source, None)
    if first is None:
        return
    prev = check_frame(first)
    first = prev if closed_loop else None  # a closed loop ends with the frames from the last back to the first
    report()
    yield prev
    for index, frame in enumerate(source, start=1):
        frame = check_frame(frame, prev.shape, index)
        for middle in interpolate_pair(prev, frame, factor):
            report()
            yield middle
        report()
        yield frame
        prev = frame
    if closed_loop:
        for middle in interpolate_pair(prev, first, factor):
            report()
            yield middle


def interpolate_frames(frames: Iterable[np.ndarray], factor: int, closed_loop: bool = False,
                       progress: Optional[Progress] = None, total: Optional[int] = None) -> Iterator[np.ndarray]:
    """Stream the clip with factor - 1 frames inserted between neighbours (and last -> first for closed loops).

    factor 1 yields the input frames themselves. `total` is the number of input frames, for `progress(done,
    out_total)` called as each output frame is produced (out_total is 0 when neither total nor len(frames) is
    known). The factor is checked at once; frames as they arrive.
    """
    factor = check_factor(factor, "factor")
    out_total = _progress_total(frames, factor, closed_loop, total)
    done = [0]

    def report() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], out_total)

    return _stream(frames, factor, closed_loop, report)
