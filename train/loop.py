"""The training loop: AdamW with warm-up, accumulation, clipping, mixed precision, EMA, DDP, states and validation."""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Deque, Dict, List, Mapping, Optional

import torch
from einops import rearrange
from torch import nn
from tqdm import tqdm

from ccdm_core.errors import CCDMError
from ccdm_core.schedules import make_alphas_cumprod
from ccdm_core.sd.loader import SDModel

from . import distributed
from .cache import CacheIndex, LatentClipDataset, build_latent_cache, cache_fingerprint
from .config import TIMESTEPS, TrainConfig
from .data import VideoItem, load_items
from .dataset import Batch, BatchStream, ClipDataset, ShardSampler
from .fusion import Fuse
from .losses import LossWeights, ccdm_loss, sample_key_mask
from .model import MotionTrainer, Trainables, autocast_dtype, base_id, build_trainables, load_base, training_patches
from .state import EMA, latest_state, load_state, save_state
from .validation import write_validation_clip

VAE_CHUNK = 8  # frames per VAE call when encoding a batch (bounded memory at 256 px and above)
FINAL_WINDOW = 10  # final_loss: mean over the last steps
TERMS = ("total", "eps", "temporal", "keyframe")


@dataclasses.dataclass
class Run:
    """Everything one training process holds."""

    cfg: TrainConfig
    env: distributed.DistEnv
    run_dir: Path
    model: SDModel
    trainables: Trainables
    core: MotionTrainer  # the module training_patches prepares
    trainer: nn.Module  # `core`, or DDP around it
    optimizer: torch.optim.Optimizer
    scaler: Optional[object]
    ema: Optional[EMA]
    generator: torch.Generator  # timesteps, noise and keyframes of this rank
    stream: BatchStream
    alphas_cumprod: torch.Tensor  # fp32 on the device
    amp_dtype: Optional[torch.dtype]
    weights: LossWeights
    validation_prompt: str
    writes: bool  # rank 0 of a real (not dry) run: the only process that writes files
    step: int = 0


@dataclasses.dataclass
class FitResult:
    summary: dict  # the JSON line the CLI prints
    trainables: Trainables
    model: SDModel


def fit(cfg: TrainConfig, *, resume: bool = False, dry_run: bool = False,
        extras: Optional[Mapping[str, nn.Module]] = None, fuse: Optional[Fuse] = None,
        progress: bool = True) -> FitResult:
    """Train the motion module (and the fusion module, or `extras` with their `fuse`) on the frozen base; under
    torchrun every process calls this."""
    started = time.perf_counter()
    env = distributed.setup(cfg.device)
    # Denormal floats (small random or early-training weights produce them) make CPU kernels 5-10x slower.
    flush = env.device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        run = prepare(cfg, env, resume=resume, dry_run=dry_run, extras=extras, fuse=fuse, progress=progress)
        try:
            summary = train(run, dry_run=dry_run, progress=progress)
        finally:
            run.stream.close()
        summary["seconds"] = round(time.perf_counter() - started, 3)  # loading included; steps/s is the loop's
        return FitResult(summary, run.trainables, run.model)
    finally:
        if flush:
            torch.set_flush_denormal(False)  # torch's default; there is no getter for the previous value
        distributed.teardown(env)


def _grad_scaler(amp_dtype: Optional[torch.dtype]):
    """Loss scaling for fp16 only (bf16 has fp32's range)."""
    if amp_dtype != torch.float16:
        return None
    try:
        return torch.amp.GradScaler("cuda")
    except (AttributeError, TypeError):  # torch < 2.3
        return torch.cuda.amp.GradScaler()


def _check_run_dir(run_dir: Path, resume: bool, dry_run: bool) -> Optional[Path]:
    """The state to resume from; refuses to train over an existing run without --resume."""
    state = latest_state(run_dir) if (run_dir / "config.json").is_file() else None
    if state is not None and not resume and not dry_run:
        raise CCDMError(f"{run_dir} already holds a run (latest state {state.name}); pass --resume to continue it "
                        f"or choose another --out")
    if resume and state is None:
        warnings.warn(f"--resume: {run_dir} has no saved state yet; starting at step 0")
    return state if resume else None


def prepare(cfg: TrainConfig, env: distributed.DistEnv, *, resume: bool, dry_run: bool,
            extras: Optional[Mapping[str, nn.Module]], fuse: Optional[Fuse], progress: bool) -> Run:
    """Numbered steps: run folder, frozen base, trainables, data, optimiser, saved state."""
    # 1. Run folder: refuse to overwrite a run; the saved state when resuming.
    run_dir = Path(cfg.out)
    state_dir = _check_run_dir(run_dir, resume, dry_run)
    # 2. The frozen base and the trainable modules.
    amp_dtype = autocast_dtype(cfg.precision, env.device)
    model = load_base(cfg.base, env.device, amp_dtype)
    trainables = build_trainables(cfg, model, env.device, extras, fuse)
    ema = EMA(trainables, cfg.ema_decay) if cfg.ema_decay else None
    # 3. Data.
    items = load_items(cfg.data, cfg.video_root)
    dataset = _dataset(cfg, env, items, model, use_cache=cfg.cache_latents and not dry_run, progress=progress)
    # 4. Optimiser and this rank's generator; then the saved state over them.
    optimizer = torch.optim.AdamW(trainables.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = _grad_scaler(amp_dtype)
    generator = torch.Generator().manual_seed(cfg.seed * 1009 + 7919 * env.rank + 1)
    step, cursor, skipped = 0, (0, 0), {}
    if state_dir is not None:
        step, cursor, skipped = _restore(state_dir, env, trainables, ema, optimizer, scaler, generator)
    sampler = ShardSampler(len(items), env.rank, env.world_size, cfg.seed, cursor)
    stream = BatchStream(dataset, sampler, cfg.batch_size, cfg.workers)
    stream.skipped.update(skipped)
    # 5. DDP over the trainable module only.
    core = MotionTrainer(trainables, model.unet)
    trainer = distributed.wrap(core, env, find_unused=bool(len(trainables.extras)))
    alphas = make_alphas_cumprod(cfg.beta_schedule, cfg.beta_start, cfg.beta_end, TIMESTEPS)
    writes = env.is_main and not dry_run
    if writes:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(cfg.to_json(), encoding="utf-8")
    weights = LossWeights(cfg.lambda1, cfg.k, cfg.lambda2, cfg.keyframe_snr_gamma)
    prompt = cfg.validation_prompt or next((i.caption for i in items if i.caption), "a video")
    return Run(cfg, env, run_dir, model, trainables, core, trainer, optimizer, scaler, ema, generator, stream,
               alphas.to(device=env.device, dtype=torch.float32), amp_dtype, weights, prompt, writes, step)


def _restore(state_dir: Path, env, trainables, ema, optimizer, scaler, generator):
    state = load_state(state_dir, trainables, ema, env.device)
    optimizer.load_state_dict(state.training["optimizer"])
    if scaler is not None and state.training.get("scaler"):
        scaler.load_state_dict(state.training["scaler"])
    generators = state.training["generators"]
    same_world = len(state.cursors) == env.world_size
    if not same_world:
        warnings.warn(f"resuming {len(state.cursors)}-process state with {env.world_size} processes: the data "
                      f"order restarts at the next epoch and noise streams are re-seeded")
    if same_world:
        generator.set_state(generators[env.rank])
        cursor = tuple(state.cursors[env.rank])
    else:
        cursor = (max(c[0] for c in state.cursors) + 1, 0)
        generator.manual_seed(int(generator.initial_seed()) + state.step)
    return state.step, cursor, state.skipped


def _dataset(cfg: TrainConfig, env, items: List[VideoItem], model: SDModel, use_cache: bool, progress: bool):
    """Decoded clips, or windows of the latent cache (built first for the videos it lacks, shared by all ranks)."""
    if not use_cache:
        return ClipDataset(items, cfg.frames, cfg.stride, cfg.size, cfg.caption_dropout, cfg.seed, cfg.decoder)
    folder = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out) / "latents"
    folder.mkdir(parents=True, exist_ok=True)
    fingerprint = cache_fingerprint(items, base_id(model), cfg.size, cfg.stride, cfg.clip_frames, cfg.seed)
    todo = distributed.broadcast_object(env, CacheIndex(folder, fingerprint).load().missing(len(items)))
    if todo:
        mine = todo[env.rank:: env.world_size]
        with tqdm(total=len(mine), desc="caching latents", unit="video",
                  disable=not (progress and env.is_main)) as bar:
            build_latent_cache(items, mine, CacheIndex(folder, fingerprint), lambda x: _vae_mean(model, x),
                               frames=cfg.frames, clip_frames=cfg.clip_frames, stride=cfg.stride, size=cfg.size,
                               seed=cfg.seed, rank=env.rank, decoder=cfg.decoder, progress=bar.update)
        distributed.barrier(env)
    index = CacheIndex(folder, fingerprint).load()
    if index.missing(len(items)):
        raise CCDMError(f"the latent cache in {folder} is incomplete after building it (another run writing there?)")
    return LatentClipDataset(items, index, cfg.frames, cfg.caption_dropout, cfg.seed)


def _vae_mean(model: SDModel, images: torch.Tensor) -> torch.Tensor:
    """Unscaled VAE posterior means of float images `n 3 H W` in [-1, 1]."""
    vae = model.vae
    return vae.encode(images.to(device=next(vae.parameters()).device, dtype=torch.float32))


@torch.no_grad()
def clean_latents(run: Run, batch: Batch) -> torch.Tensor:
    """x0 `b c f h w` (fp32, scaled by the model's scale factor): cached, or VAE-encoded a few frames at a time."""
    scale = run.model.scale_factor
    if batch.latents is not None:
        return batch.latents.to(run.env.device, torch.float32) * scale
    frames = rearrange(batch.pixels, "b c f h w -> (b f) c h w")
    means = torch.cat([_vae_mean(run.model, frames[i: i + VAE_CHUNK]) for i in range(0, len(frames), VAE_CHUNK)])
    return rearrange(means.float() * scale, "(b f) c h w -> b c f h w", b=batch.pixels.shape[0])


def _autocast(run: Run):
    if run.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=run.env.device.type, dtype=run.amp_dtype)


def micro_step(run: Run, batch: Batch, scale: float) -> Dict[str, float]:
    """Forward and backward of one batch; returns its loss terms."""
    # 1. Frozen parts: clean latents and text context.
    device, cfg = run.env.device, run.cfg
    x0 = clean_latents(run, batch)
    context = run.model.encode_prompts(batch.captions)
    # 2. Timesteps (one per clip), noise and keyframes from this rank's generator.
    videos, frames = x0.shape[0], x0.shape[2]
    t = torch.randint(0, TIMESTEPS, (videos,), generator=run.generator).to(device)
    eps = torch.randn(x0.shape, generator=run.generator).to(device)
    key_mask = None
    if cfg.lambda2:
        key_mask = sample_key_mask(videos, frames, cfg.keyframe_prob, run.generator).to(device)
    a = run.alphas_cumprod[t]
    a5 = a.view(-1, 1, 1, 1, 1)
    x_t = a5.sqrt() * x0 + (1.0 - a5).sqrt() * eps
    # 3. Prediction, eq. 13, backward.
    with _autocast(run):
        eps_hat, x0_pred = run.trainer(x_t, t, context, x0, key_mask, a)
    terms = ccdm_loss(eps_hat, eps, run.weights, x0_pred, x0, key_mask, a)
    loss = terms.total * scale
    (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
    return terms.values()


def _optimizer_step(run: Run) -> Dict[str, float]:
    """Warm-up learning rate, unscale, clip, step, EMA; returns the learning rate and the gradient norm."""
    cfg = run.cfg
    lr = cfg.lr * min(1.0, (run.step + 1) / cfg.warmup) if cfg.warmup else cfg.lr
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.trainables.parameters(), cfg.max_grad_norm or float("inf"))
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update(run.trainables, run.step)
    return {"lr": lr, "grad_norm": float(grad_norm)}


def train_step(run: Run) -> Dict[str, float]:
    """One optimiser step over `grad_accum` batches (DDP reduces gradients on the last one only)."""
    accum = run.cfg.grad_accum
    totals = dict.fromkeys(TERMS, 0.0)
    for micro in range(accum):
        batch = run.stream.next_batch()
        skip_sync = run.env.distributed and micro < accum - 1
        with run.trainer.no_sync() if skip_sync else contextlib.nullcontext():
            values = micro_step(run, batch, 1.0 / accum)
        for name in TERMS:
            totals[name] += values[name] / accum
    totals.update(_optimizer_step(run))
    return totals


def _next_stop(run: Run, target: int) -> int:
    """The next step that needs the UNet unpatched (state save, validation) or ends the run."""
    stops = [target, (run.step // run.cfg.save_every + 1) * run.cfg.save_every]
    if run.cfg.validate_every:
        stops.append((run.step // run.cfg.validate_every + 1) * run.cfg.validate_every)
    return min(stops)


def _log(run: Run, window: List[Dict[str, float]], bar: tqdm, rate: float) -> None:
    """Loss terms averaged over the window and all ranks: progress bar and `log.jsonl` (rank 0)."""
    means = distributed.mean_across(run.env, [sum(w[n] for w in window) / len(window) for n in TERMS])
    if not run.env.is_main:
        return
    record = dict(zip(TERMS, means), step=run.step, lr=window[-1]["lr"], grad_norm=window[-1]["grad_norm"],
                  steps_per_second=rate)
    bar.set_postfix(loss=f"{means[0]:.4f}", eps=f"{means[1]:.4f}", tmp=f"{means[2]:.4f}",
                    key=f"{means[3]:.4f}", lr=f"{record['lr']:.2e}", refresh=False)
    if not run.writes:
        return
    with open(run.run_dir / "log.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def _save(run: Run) -> Optional[Path]:
    """Gather every rank's cursor, generator and skipped videos; rank 0 writes the state."""
    cursors = distributed.gather(run.env, list(run.stream.cursor))
    generators = distributed.gather(run.env, run.generator.get_state())
    skipped = _all_skipped(run)
    path = None
    if run.env.is_main:
        training = {"optimizer": run.optimizer.state_dict(), "generators": generators,
                    "scaler": run.scaler.state_dict() if run.scaler is not None else {}}
        path = save_state(run.run_dir, run.step, run.trainables, run.ema, training, cursors, skipped,
                          run.cfg.keep_states)
    distributed.barrier(run.env)
    return path


def _all_skipped(run: Run) -> Dict[str, str]:
    merged: Dict[str, str] = {}
    for part in distributed.gather(run.env, dict(run.stream.skipped)):
        merged.update(part)
    return merged


def _after_segment(run: Run, target: int, dry_run: bool) -> Optional[Path]:
    """States every --save-every steps and at the end; validation clips every --validate-every steps (rank 0)."""
    if dry_run:
        return None
    path = None
    if run.step >= target or run.step % run.cfg.save_every == 0:
        path = _save(run)
    if run.cfg.validate_every and run.step % run.cfg.validate_every == 0:
        if run.env.is_main:
            clip = write_validation_clip(run.model, run.trainables, run.cfg, run.validation_prompt, run.step,
                                         run.run_dir, run.amp_dtype)
            tqdm.write(f"validation clip: {clip}", file=sys.stderr)
        distributed.barrier(run.env)
    return path


def train(run: Run, *, dry_run: bool = False, progress: bool = True) -> dict:
    """Steps until --steps (one for a dry run), in stretches between states and validations."""
    cfg, env = run.cfg, run.env
    target = run.step + 1 if dry_run else cfg.steps
    start, first_step = time.perf_counter(), run.step
    history: Deque[Dict[str, float]] = collections.deque(maxlen=max(FINAL_WINDOW, cfg.log_every))
    state: Optional[Path] = None
    reported = set(run.stream.skipped)
    with tqdm(total=target, initial=run.step, unit="step", desc="ccdm train", dynamic_ncols=True,
              disable=not (progress and env.is_main)) as bar:
        while run.step < target:
            stop = _next_stop(run, target)
            with training_patches(run.core, cfg.frames, cfg.gradient_checkpointing):
                while run.step < stop:
                    history.append(train_step(run))
                    run.step += 1
                    bar.update(1)
                    reported = _report_skipped(run, reported)
                    if run.step % cfg.log_every == 0 or run.step == target:
                        rate = (run.step - first_step) / max(time.perf_counter() - start, 1e-9)
                        _log(run, list(history)[-cfg.log_every:], bar, rate)
            state = _after_segment(run, target, dry_run) or state
    return _summary(run, history, time.perf_counter() - start, run.step - first_step, state, dry_run)


def _report_skipped(run: Run, reported: set) -> set:
    new = [p for p in run.stream.skipped if p not in reported]
    for path in new:
        tqdm.write(f"skipped video (rank {run.env.rank}): {path}: {run.stream.skipped[path]}", file=sys.stderr)
    return reported.union(new)


def _summary(run: Run, history, seconds: float, steps_done: int, state: Optional[Path], dry_run: bool) -> dict:
    """The final JSON line: steps, final_loss (mean of the last steps over all ranks), skipped_videos, seconds
    (here the loop's; fit replaces it with the whole run's), steps_per_second (the loop's)."""
    recent = list(history)[-FINAL_WINDOW:]
    final = distributed.mean_across(run.env, [sum(h["total"] for h in recent) / max(len(recent), 1)])[0]
    skipped = _all_skipped(run)
    if run.writes and skipped:
        (run.run_dir / "skipped.json").write_text(json.dumps(skipped, indent=1, sort_keys=True), encoding="utf-8")
    return {"steps": run.step, "final_loss": round(final, 6), "skipped_videos": len(skipped),
            "seconds": round(seconds, 3), "steps_per_second": round(steps_done / max(seconds, 1e-9), 3),
            "processes": run.env.world_size, "run_dir": str(run.run_dir), "state": str(state) if state else None,
            "dry_run": dry_run}
