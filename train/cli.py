"""`python -m train fit|export`: validated options; one JSON line on success, one error line (exit 2) on bad input."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

from ccdm_core.errors import CCDMError

from .config import DECODERS, LAYOUTS, PRECISIONS, DEVICES, TrainConfig, merge_for_resume

PATH_FIELDS = ("base", "data", "out", "video_root", "cache_dir", "init")
_DEFAULTS = TrainConfig()
# flag -> (type, help); the field is the flag without dashes, '-' -> '_'. Defaults come from TrainConfig.
FIT_OPTIONS = {
    "--base": (str, "SD1.x checkpoint the module is trained on (frozen), or 'default' (built-in tiny model)"),
    "--data": (str, "folder of videos (captions: its one .csv/.jsonl, else file names), a CSV or a JSONL"),
    "--out": (str, "run folder: config.json, states/, samples/, log.jsonl"),
    "--video-root": (str, "folder relative video paths of the CSV/JSONL start from (default: the file's folder)"),
    "--steps": (int, "optimiser steps"), "--batch-size": (int, "clips per process per step"),
    "--lr": (float, "AdamW learning rate"), "--weight-decay": (float, "AdamW weight decay"),
    "--warmup": (int, "linear learning-rate warm-up steps"), "--grad-accum": (int, "batches per optimiser step"),
    "--max-grad-norm": (float, "gradient clipping norm (0: off)"),
    "--frames": (int, "frames per clip"), "--stride": (int, "take every S-th source frame"),
    "--size": (int, "clip side in pixels after resize + centre crop (multiple of 64)"),
    "--caption-dropout": (float, "probability of an empty caption (classifier-free guidance)"),
    "--lambda1": (float, "weight of the temporal-neighbour term"), "--k": (int, "neighbours on each side"),
    "--lambda2": (float, "weight of the keyframe term (0: no keyframe training)"),
    "--keyframe-prob": (float, "probability that a clip gets keyframes"),
    "--keyframe-snr-gamma": (float, "cap of the keyframe term's per-clip SNR weight (0: plain x0-MSE)"),
    "--beta-schedule": (str, "diffusion betas: linear (paper config C) or scaled_linear (A, B)"),
    "--beta-start": (float, "first beta"), "--beta-end": (float, "last beta"),
    "--layout": (str, f"fresh module layout: {', '.join(LAYOUTS)}"),
    "--max-frames": (int, "frame positions of a fresh module"),
    "--init": (str, "start from this motion module (CCDM or AnimateDiff) instead of a fresh one"),
    "--fusion-strength": (float, "fusion strength the keyframe term trains with (falls with the noise level)"),
    "--fusion-mode": (str, "fusion frame weights: uniform, temporal, keyframe"),
    "--precision": (str, f"{', '.join(PRECISIONS)} (auto: bf16/fp16 autocast on GPUs, fp32 on the CPU)"),
    "--device": (str, f"{', '.join(DEVICES)}"), "--seed": (int, "seed of data order, noise and keyframes"),
    "--ema-decay": (float, "EMA of the weights (0: off), e.g. 0.9999"),
    "--workers": (int, "data-loading processes per training process"),
    "--decoder": (str, f"video decoder: {', '.join(DECODERS)}"),
    "--cache-dir": (str, "latent cache folder (default: RUN_DIR/latents)"),
    "--cache-frames": (int, "latent frames cached per video (0: --frames); clips are windows of them"),
    "--save-every": (int, "steps between training states"), "--keep-states": (int, "states kept"),
    "--validate-every": (int, "steps between validation clips (0: never)"),
    "--validation-prompt": (str, "prompt of validation clips (default: the first caption)"),
    "--validation-steps": (int, "sampling steps of validation clips"),
    "--log-every": (int, "steps between log lines (log.jsonl)"),
}
FIT_FLAGS = {
    "--cache-latents": "VAE-encode every clip once into safetensors shards; later epochs skip the VAE",
    "--gradient-checkpointing": "recompute UNet blocks in the backward pass (less memory, ~30%% slower)",
    "--train-fusion": "also train the fusion module's patch projections, through the keyframe term",
}


def _field(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _fit_parser(sub) -> None:
    p = sub.add_parser("fit", help="train a motion module on videos", argument_default=argparse.SUPPRESS)
    for flag, (kind, text) in FIT_OPTIONS.items():
        default = getattr(_DEFAULTS, _field(flag))
        shown = f" (default: {default})" if default not in ("", None) and flag not in ("--base",) else ""
        p.add_argument(flag, type=kind, metavar=_field(flag).upper(), help=text + shown.replace("%", "%%"))
    for flag, text in FIT_FLAGS.items():
        p.add_argument(flag, action="store_true", help=text)
    p.add_argument("--resume", action="store_true", default=False, help="continue the run in --out from its "
                   "latest state (other options default to the run's own)")
    p.add_argument("--dry-run", action="store_true", default=False,
                   help="load everything, run one step, write nothing, exit")
    p.add_argument("--quiet", action="store_true", default=False, help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description="Train CCDM motion modules on video")
    sub = parser.add_subparsers(dest="command", required=True)
    _fit_parser(sub)
    p = sub.add_parser("export", help="write a run's latest (or a given) state as a motion module file")
    p.add_argument("source", metavar="RUN_DIR_OR_STATE")
    p.add_argument("--out", required=True, help="motion module file (.safetensors)")
    p.add_argument("--no-ema", action="store_true", help="export the live weights even when the run kept an EMA")
    p = sub.add_parser("synth", help="write small synthetic clips (camera pans over photos, moving squares)")
    p.add_argument("folder")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=96)
    return parser


def _given(args: argparse.Namespace) -> dict:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names}
    for key in PATH_FIELDS:
        if given.get(key) and not (key == "base" and given[key] == "default"):
            given[key] = os.path.abspath(os.path.expanduser(given[key]))
    return given


def fit_config(args: argparse.Namespace) -> TrainConfig:
    """The run's configuration: the options given, or for --resume the run's own with the allowed changes."""
    from .state import read_run_config

    given = _given(args)
    if "out" not in given:
        raise CCDMError("--out RUN_DIR is required")
    if args.resume and (Path(given["out"]) / "config.json").is_file():
        return merge_for_resume(read_run_config(Path(given["out"])), given)
    missing = [f"--{k}" for k in ("base", "data") if not given.get(k)]
    if missing:
        raise CCDMError(f"{' and '.join(missing)} required (--base accepts an SD1.x checkpoint or 'default')")
    return TrainConfig(**given)


def _synth(args: argparse.Namespace) -> dict:
    from .synthetic import write_synthetic_videos

    for name, value, low, high in (("count", args.count, 1, 1000), ("frames", args.frames, 2, 1024),
                                   ("size", args.size, 16, 1024)):
        if not low <= value <= high:
            raise CCDMError(f"--{name} must be in {low}..{high}, got {value}")
    paths = write_synthetic_videos(Path(args.folder), args.count, args.frames, args.size)
    return {"folder": str(Path(args.folder).resolve()), "videos": len(paths)}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "fit":
            from .loop import fit

            out = fit(fit_config(args), resume=args.resume, dry_run=args.dry_run, progress=not args.quiet).summary
        elif args.command == "export":
            from .state import export_module

            out = export_module(Path(args.source), Path(args.out), use_ema=not args.no_ema)
        else:
            out = _synth(args)
    except CCDMError as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(out), flush=True)
    return 0
