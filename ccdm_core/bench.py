"""`ccdm bench motion`: the bare UNet vs the UNet with a motion module, timed alternately, FLOPs counted."""
from __future__ import annotations

import platform
import resource
import statistics
import time
from typing import Dict

import torch

from .attention import math_attention, use_attention_backend
from .errors import CCDMError
from .flops import count_flops
from .inject import inject_motion
from .sd.configs import build_unet, sd15_unet_config, tiny_unet_config
from .sd.sdpa import sdpa_cross_attention
from .unet_slots import new_motion_module


def _inputs(frames: int, latent: int, context_dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, 4, latent, latent, generator=g)
    t = torch.full((frames,), 500.0)
    context = torch.randn(frames, 77, context_dim, generator=g)
    return x, t, context


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _flops(fn) -> int:
    """Counted with attention as explicit matmuls, since a dispatch-level counter does not see SDPA kernels."""
    with use_attention_backend(math_attention):
        return count_flops(fn)


def _peak_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@torch.no_grad()
def bench_motion(size: str = "tiny", frames: int = 16, latent: int = 32, repeats: int = 3) -> Dict[str, object]:
    """Median seconds of both arms over alternating repeats, their ratio, the FLOP ratio and peak memory."""
    if size not in ("tiny", "sd15") or not 1 <= frames <= 32 or not 8 <= latent <= 128 or not 1 <= repeats <= 50:
        raise CCDMError("bench motion accepts --size tiny|sd15, --frames 1..32, --latent 8..128, --repeats 1..50")
    # 1. The two arms share one UNet (SDPA attention in both) and one input.
    torch.manual_seed(0)
    config = sd15_unet_config() if size == "sd15" else tiny_unet_config()
    unet = build_unet(config).eval()
    module = new_motion_module(unet, "animatediff-v2")
    for p in module.parameters():  # non-zero outputs so the module is not optimised away in any kernel
        p.normal_(0, 0.02)
    x, t, context = _inputs(frames, latent, config["context_dim"])

    def bare():
        unet(x, t, context)

    def with_motion():
        with inject_motion(unet, module, frames):
            unet(x, t, context)

    with sdpa_cross_attention(unet):
        # 2. Warm up, then alternate the arms so drift of a shared machine hits both alike.
        bare(), with_motion()
        peak_bare = _peak_mb()
        times = {"bare": [], "motion": []}
        for _ in range(repeats):
            times["bare"].append(_timed(bare))
            times["motion"].append(_timed(with_motion))
        peak_motion = _peak_mb()
        # 3. FLOPs of the same two calls.
        flops_bare, flops_motion = _flops(bare), _flops(with_motion)
    med_bare, med_motion = statistics.median(times["bare"]), statistics.median(times["motion"])
    time_ratio, flop_ratio = med_motion / med_bare, flops_motion / flops_bare
    return {
        "bench": "motion", "size": size, "frames": frames, "latent": latent, "repeats": repeats,
        "device": "cuda" if torch.cuda.is_available()
        else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
        "median_s_bare": round(med_bare, 4), "median_s_motion": round(med_motion, 4),
        "time_ratio": round(time_ratio, 4), "flop_ratio": round(flop_ratio, 4),
        "time_over_flop_ratio": round(time_ratio / flop_ratio, 4),
        "gflops_bare": round(flops_bare / 1e9, 2), "gflops_motion": round(flops_motion / 1e9, 2),
        "peak_mb_after_bare": round(peak_bare, 1), "peak_mb_after_motion": round(peak_motion, 1),
        "module_params_m": round(sum(p.numel() for p in module.parameters()) / 1e6, 1),
    }


def bench_fusion(frames: int = 16, seeds=(0, 1, 2), size: int = 64, steps: int = 20,
                 prompt: str = "a cat, camera zooms in", motion_path: str = None) -> Dict[str, object]:
    """Flicker and warp error of the same model, prompt and seeds with fusion on vs off (not a test)."""
    import dataclasses

    from .metrics import evaluate_frames
    from .motion_io import load_motion_module
    from .pipeline import VideoSettings, generate
    from .sd.loader import build_default_model

    model = build_default_model()
    motion = load_motion_module(motion_path) if motion_path else None
    base = VideoSettings(prompt, frames=frames, width=size, height=size, steps=steps,
                         fusion_strength=0.0, cross_frame_strength=0.0)
    arms = {"off": base, "on": dataclasses.replace(base, fusion_strength=0.5, cross_frame_strength=0.5)}
    scores = {name: {"warp_error": [], "flicker_index": [], "motion_magnitude_pct": []} for name in arms}
    start = time.perf_counter()
    for seed in seeds:
        for name, settings in arms.items():
            result = generate(model, motion, dataclasses.replace(settings, seed=seed))
            metrics = evaluate_frames(result.frames)
            for key in scores[name]:
                scores[name][key].append(metrics[key])
    mean = {arm: {k: round(statistics.mean(v), 4) for k, v in s.items()} for arm, s in scores.items()}
    ratio = {k: round(mean["on"][k] / mean["off"][k], 4) if mean["off"][k] else None for k in mean["on"]}
    return {"bench": "fusion", "model": model.source, "motion": motion_path, "frames": frames, "size": size,
            "steps": steps, "seeds": list(seeds), "off": mean["off"], "on": mean["on"],
            "on_over_off": ratio, "seconds": round(time.perf_counter() - start, 1),
            "note": "a random tiny model proves the mechanics, not quality"}
