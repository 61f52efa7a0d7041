"""Training end to end on a tiny base model and synthetic clips: learning, frozen base, resume, export, CLI."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from ccdm_core.errors import CCDMError
from ccdm_core.fusion import FusionSettings, PatchFusion
from ccdm_core.hashing import file_sha256
from ccdm_core.motion_io import inspect_motion_file, load_motion_module
from ccdm_core.sd.loader import build_default_model, load_sd_checkpoint, save_sd_checkpoint
from ccdm_core.tensorfile import read_tensors
from ccdm_core.video import read_video
from train.cli import main
from train.config import TrainConfig, merge_for_resume
from train.fusion import fusion_weight
from train.loop import fit
from train.model import MotionTrainer, build_trainables, gradient_checkpointing, training_patches
from train.state import export_module
from train.synthetic import write_synthetic_videos

TINY = dict(size=64, frames=8, stride=1, batch_size=1, workers=0, device="cpu", validate_every=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny kernels gain little from a second thread, and on a busy 2-core machine two OpenMP threads are ~10x
    slower than one; the previous setting is restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    write_synthetic_videos(folder, count=4, frames=12, size=64)
    (folder / "corrupt_upload.mp4").write_bytes(b"\x00\x01 truncated " * 40)
    return folder


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "tiny-sd1.safetensors"
    save_sd_checkpoint(build_default_model(0), path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir, base_ckpt):
    """40 steps on the saved tiny checkpoint, with every term, EMA and a validation clip at the end."""
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(base=str(base_ckpt), data=str(data_dir), out=str(out), steps=40, lr=1e-3, warmup=0, seed=3,
                      lambda1=0.1, k=2, lambda2=0.1, ema_decay=0.9, save_every=20, log_every=1,
                      **dict(TINY, validate_every=40, validation_steps=2))
    return cfg, fit(cfg, progress=False)


def _log(cfg):
    with open(f"{cfg.out}/log.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_loss_decreases(trained):
    cfg, result = trained
    totals = [r["total"] for r in _log(cfg)]
    assert len(totals) == 40
    first, last = sum(totals[:10]) / 10, sum(totals[-10:]) / 10
    assert last < 0.9 * first, (first, last)
    assert result.summary["steps"] == 40 and result.summary["final_loss"] > 0
    assert any(r["keyframe"] > 0 for r in _log(cfg))  # the keyframe term was trained


def test_base_weights_unchanged(trained, base_ckpt):
    _, result = trained
    fresh = load_sd_checkpoint(base_ckpt)
    for name in ("unet", "vae", "text_encoder"):
        before, after = getattr(fresh, name).state_dict(), getattr(result.model, name).state_dict()
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before), name
    assert not any(p.requires_grad for p in result.model.unet.parameters())
    assert all(p.requires_grad for p in result.trainables.parameters())


def test_corrupt_video_is_skipped_and_reported(trained):
    cfg, result = trained
    assert result.summary["skipped_videos"] == 1
    skipped = json.loads(open(f"{cfg.out}/skipped.json", encoding="utf-8").read())
    assert list(skipped) == [f"{cfg.data}/corrupt_upload.mp4"]


def test_validation_clip_written(trained):
    cfg, _ = trained
    frames, _ = read_video(f"{cfg.out}/samples/step-00000040.mp4")
    assert frames.shape == (8, 64, 64, 3)


def test_export_round_trip_and_metadata(trained, base_ckpt, tmp_path):
    cfg, result = trained
    live = export_module(cfg.out, tmp_path / "live.safetensors", use_ema=False)
    module = load_motion_module(live["path"])
    expected = result.trainables.motion.state_dict()
    assert module.state_dict().keys() == expected.keys()
    assert all(torch.equal(module.state_dict()[k], expected[k].cpu()) for k in expected)
    ema = export_module(cfg.out, tmp_path / "ema.safetensors")
    assert ema["ema"] and ema["sha256"] == file_sha256(tmp_path / "ema.safetensors") != live["sha256"]
    ema_tensors, _ = read_tensors(f"{cfg.out}/states/step-00000040/ema.safetensors")
    exported, _ = read_tensors(tmp_path / "ema.safetensors")
    assert all(torch.equal(exported[k], ema_tensors[k]) for k in ema_tensors)
    info = inspect_motion_file(tmp_path / "ema.safetensors")
    assert info["format"] == "ccdm" and info["beta_schedule"] == "linear" and info["beta_end"] == 0.012
    assert info["metadata"]["ccdm.base_model_sha256"] == file_sha256(base_ckpt)
    assert info["metadata"]["ccdm.frames"] == "8" and info["metadata"]["ccdm.train_step"] == "40"
    assert json.loads(info["metadata"]["ccdm.train_config"])["lambda2"] == 0.1
    # an exported module is a valid --init for further training
    again = TrainConfig(base=str(base_ckpt), data=cfg.data, out=str(tmp_path / "again"), init=live["path"], **TINY)
    assert fit(again, dry_run=True, progress=False).summary["steps"] == 1


def test_latent_cache_is_built_once_and_reused(tmp_path, data_dir):
    cache = tmp_path / "latents"
    cfg = TrainConfig(base="default", data=str(data_dir), out=str(tmp_path / "a"), steps=2, cache_latents=True,
                      cache_dir=str(cache), cache_frames=10, save_every=2, **TINY)
    first = fit(cfg, progress=False)
    files = sorted(p.name for p in cache.iterdir())
    assert first.summary["skipped_videos"] == 1
    assert len([f for f in files if f.startswith("index-")]) == 1 and any(f.startswith("latents-") for f in files)
    fit(dataclasses.replace(cfg, out=str(tmp_path / "b")), progress=False)
    assert sorted(p.name for p in cache.iterdir()) == files  # nothing encoded again


def test_resume_gives_the_same_weights(tmp_path, data_dir):
    common = dict(base="default", data=str(data_dir), steps=6, lr=1e-3, warmup=2, grad_accum=2, ema_decay=0.8,
                  save_every=3, lambda2=0.5, keyframe_prob=1.0, seed=5, **TINY)
    whole = fit(TrainConfig(out=str(tmp_path / "whole"), **common), progress=False)
    first = TrainConfig(out=str(tmp_path / "split"), **dict(common, steps=3))
    fit(first, progress=False)
    resumed = fit(merge_for_resume(first, {"steps": 6}), resume=True, progress=False)
    a, b = whole.trainables.state_dict(), resumed.trainables.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.summary["steps"] == 6
    ema_a, _ = read_tensors(tmp_path / "whole/states/step-00000006/ema.safetensors")
    ema_b, _ = read_tensors(tmp_path / "split/states/step-00000006/ema.safetensors")
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    with pytest.raises(CCDMError, match="already holds a run"):
        fit(first, progress=False)
    with pytest.raises(CCDMError, match="cannot resume with different lr"):
        merge_for_resume(first, {"lr": 1.0})


def test_fusion_projections_are_trained_saved_and_reloaded(tmp_path, data_dir):
    cfg = TrainConfig(base="default", data=str(data_dir), out=str(tmp_path / "run"), steps=3, lr=1e-2, warmup=0,
                      lambda2=1.0, keyframe_prob=1.0, train_fusion=True, save_every=3, **dict(TINY, batch_size=2))
    result = fit(cfg, progress=False)
    fusion = result.trainables.extras["fusion"]
    assert isinstance(fusion, PatchFusion)
    q = fusion.levels[0].to_q.weight.detach()
    assert not torch.equal(q, torch.eye(q.shape[0]))  # moved from its identity start: the keyframe term reached it
    module = load_motion_module(export_module(cfg.out, tmp_path / "m.safetensors")["path"])
    reloaded = PatchFusion.from_extras(module.extras)  # what the engine's pipeline builds from the file
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), fusion.state_dict().values()))
    fresh = build_trainables(cfg, build_default_model(0), torch.device("cpu"))  # what --resume builds, then loads
    fresh.load_tensors(read_tensors(f"{cfg.out}/states/step-00000003/trainables.safetensors")[0])
    assert torch.equal(fresh.extras["fusion"].levels[0].to_q.weight.detach(), q) and not fresh.frozen_extras


def test_fusion_weight_follows_the_sampling_schedule():
    settings = FusionSettings(strength=0.5, end_fraction=0.7)
    assert fusion_weight(settings, 999) == 0.5  # the first sampling step: full strength
    assert fusion_weight(settings, 0) == 0.0  # the end of sampling: off
    assert 0 < fusion_weight(settings, 600) < 0.5


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = build_default_model(0)
    for p in model.unet.parameters():
        p.requires_grad_(False)
    cfg = TrainConfig(base="default", data="x", out="y", **TINY)
    trainables = build_trainables(cfg, model, torch.device("cpu"))
    with torch.no_grad():
        for p in trainables.parameters():
            p.normal_(0, 0.02)  # not the identity, so every parameter gets a gradient
    trainer = MotionTrainer(trainables, model.unet)
    x = torch.randn(1, 4, 4, 8, 8)
    context = model.encode_prompts(["a"])
    grads = []
    for checkpointing in (False, True):
        trainables.zero_grad()
        with training_patches(trainer, 4, checkpointing):
            eps, _ = trainer(x, torch.tensor([500]), context)
            eps.square().mean().backward()
        grads.append([p.grad.clone() for p in trainables.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))
    blocks = [*model.unet.input_blocks, model.unet.middle_block, *model.unet.output_blocks]
    assert all("forward" not in b.__dict__ for b in blocks)  # restored
    with gradient_checkpointing(model.unet):
        assert all("forward" in b.__dict__ for b in blocks)


def test_cli_dry_run_writes_nothing(tmp_path, data_dir, capsys):
    out = tmp_path / "dry"
    code = main(["fit", "--base", "default", "--data", str(data_dir), "--out", str(out), "--size", "64",
                 "--frames", "8", "--stride", "1", "--workers", "0", "--device", "cpu", "--dry-run", "--quiet"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 1 and summary["dry_run"] and set(summary) >= {"final_loss", "skipped_videos",
                                                                              "seconds"}
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--size", "100"], "multiple of 64"),
    (["--frames", "40"], "exceeds max_frames"),
    (["--lambda1", "-1"], "lambda1 must be a number in 0"),
    (["--beta-schedule", "cosine"], "accepted: linear, scaled_linear"),
    (["--beta-start", "0.02"], "beta_start < beta_end"),
    (["--k", "0"], "k must be an integer in 1..64"),
    (["--precision", "bf16", "--device", "cpu"], "needs a CUDA GPU"),
])
def test_cli_validates_ranges(tmp_path, capsys, argv, message):
    code = main(["fit", "--base", "default", "--data", str(tmp_path), "--out", str(tmp_path / "o"), *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_config_serialises_by_field_name():
    cfg = TrainConfig(base="default", data="d", out="o", lambda2=0.0)
    again = TrainConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg and dataclasses.asdict(again)["lambda2"] == 0.0
    with pytest.raises(CCDMError, match="unknown training option"):
        TrainConfig.from_dict({"lambda3": 1})
