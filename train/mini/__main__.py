"""`python -m train.mini vae|base|classifier|clips --out DIR [--steps N] [--seed S]`: train one ccdm-mini stage."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.mini", description=__doc__)
    parser.add_argument("stage", choices=["vae", "base", "classifier", "clips"])
    parser.add_argument("--out", required=True, help="folder for the stage's files (the base stage reads vae)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
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
    stage = {"vae": train_vae, "base": train_base, "classifier": train_classifier}[args.stage]
    stats = stage(out, **kwargs)
    write_stats(out, stats)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
