"""`python -m train.mini vae|base|classifier|clips --out DIR [--steps N] [--seed S]`: train one ccdm-mini stage.

`python -m train.mini ship --run RUN --linear L --scaled-linear S --classifier C --out DIR` writes the shipped
files from the stages' outputs (see train/mini/ship.py). `python -m train.mini sweep --out DIR` measures fusion
settings on held-out prompts with the shipped model (see train/mini/fusion_sweep.py); `python -m train.mini
camera-check --out DIR` whether its clips follow the camera move the prompt names (train/mini/camera_check.py).
`python -m train.mini clips-v2 --out DIR [--count N]` writes the second-generation motion clips (still shots,
objects moving over backgrounds, camera moves, both; train/mini/motion_clips.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.mini", description=__doc__)
    parser.add_argument("stage", choices=["vae", "base", "classifier", "clips", "clips-v2", "ship", "sweep",
                                          "camera-check", "freeinit-sweep"])
    parser.add_argument("--out", required=True, help="folder for the stage's files (the base stage reads vae)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--count", type=int, default=224, help="clips-v2: how many clips (kinds in turn)")
    ship_args = parser.add_argument_group("ship", "inputs of the ship stage")
    ship_args.add_argument("--run", help="the base stage's folder (ccdm-mini.safetensors, its yaml and .clip folder)")
    ship_args.add_argument("--linear", help="motion module exported from the linear-betas run")
    ship_args.add_argument("--scaled-linear", help="motion module exported from the scaled-linear run")
    ship_args.add_argument("--classifier", help="subject-classifier.safetensors from the classifier stage")
    args = parser.parse_args(argv)
    if args.stage == "ship":
        return _ship(parser, args)
    if args.stage in ("sweep", "camera-check", "freeinit-sweep"):
        return _measure(args)
    from .classifier import train_classifier
    from .stages import train_base, train_vae, write_stats

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = {"seed": args.seed} if args.steps is None else {"seed": args.seed, "steps": args.steps}
    if args.stage == "clips":
        from .clips import write_clips

        print(json.dumps({"clips": len(write_clips(out, seed=args.seed))}))
        return 0
    if args.stage == "clips-v2":
        from .motion_clips import write_motion_clips

        if args.count < 1:
            parser.error(f"--count must be >= 1, got {args.count}")
        rows = write_motion_clips(out, count=args.count, seed=args.seed)
        kinds = {kind: sum(r["kind"] == kind for r in rows) for kind in sorted({r["kind"] for r in rows})}
        print(json.dumps({"clips": len(rows), "kinds": kinds}))
        return 0
    stage = {"vae": train_vae, "base": train_base, "classifier": train_classifier}[args.stage]
    stats = stage(out, **kwargs)
    write_stats(out, stats)
    print(json.dumps(stats))
    return 0


def _measure(args) -> int:
    """The held-out fusion sweep or the camera check, with the shipped model, default module and classifier."""
    from ccdm_core.assets import MINI_CHECKPOINT, MINI_MOTION_DEFAULT
    from ccdm_core.motion_io import load_motion_module
    from ccdm_core.sd.loader import load_sd_checkpoint

    from . import freeinit_sweep
    from .camera_check import camera_check
    from .fusion_sweep import sweep

    torch.set_num_threads(args.threads)
    classifier = Path(MINI_CHECKPOINT).parent / "subject-classifier.safetensors"
    run, name = {"sweep": (sweep, "fusion_sweep"), "camera-check": (camera_check, "camera_check"),
                 "freeinit-sweep": (freeinit_sweep.sweep, "freeinit_sweep")}[args.stage]
    result = run(load_sd_checkpoint(MINI_CHECKPOINT), load_motion_module(MINI_MOTION_DEFAULT), classifier,
                 Path(args.out))
    print((Path(args.out) / f"{name}.md").read_text())
    print(json.dumps({"seconds": result["seconds"]}))
    return 0


def _ship(parser: argparse.ArgumentParser, args) -> int:
    from ccdm_core.errors import CCDMError

    from .ship import ship

    missing = [f"--{name.replace('_', '-')}" for name in ("run", "linear", "scaled_linear", "classifier")
               if not getattr(args, name)]
    if missing:
        parser.error(f"ship needs {', '.join(missing)}")
    try:
        sums = ship(Path(args.run), {"linear": Path(args.linear), "scaled_linear": Path(args.scaled_linear)},
                    Path(args.classifier), Path(args.out))
    except CCDMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(sums, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
