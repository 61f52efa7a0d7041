"""Camera-move guidance: prompt parsing, warp directions that match the training clips, and the guidance rules."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from ccdm_core import CCDMError
from ccdm_core.camera import (MOVES, apply_camera, camera_move_in, camera_targets, camera_theta, resolve_camera)
from ccdm_core.metrics import camera_flow
from ccdm_core.pipeline import VideoSettings, generate
from ccdm_core.sd.loader import build_default_model
from train.mini.clips import make_clip
from train.mini.photos import photo


@pytest.mark.parametrize("prompt, move", [
    ("a cat, camera zooms in", "zoom in"), ("Zoom out slowly on the moon", "zoom out"),
    ("a temple, camera pans left", "pan left"), ("panning right over a city", "pan right"),
    ("a rocket, camera tilts up", "tilt up"), ("tilting down", "tilt down"),
    ("coins, camera rotates clockwise", "rotate clockwise"),
    ("rotating counter-clockwise", "rotate counterclockwise"), ("rotate anticlockwise", "rotate counterclockwise"),
    ("camera pans left, then zooms in", "pan left"),  # the first move named wins
    ("a cat", None), ("zoom left", None), ("a panda in a pan on the table", None)])
def test_moves_are_read_from_the_prompt(prompt, move):
    assert camera_move_in(prompt) == move


def test_camera_choices():
    assert resolve_camera("auto", "a cat, camera zooms in") == "zoom in"
    assert resolve_camera("none", "a cat, camera zooms in") is None
    assert resolve_camera("pan-right", "a cat, camera zooms in") == "pan right"
    with pytest.raises(CCDMError, match="unknown camera move 'sideways'; accepted: auto, none, zoom-in"):
        resolve_camera("sideways", "a cat")


@pytest.mark.parametrize("move", MOVES)
def test_the_warp_moves_content_as_the_training_clips_do(move):
    """Frame 0 warped along the path moves the same way, and about as far, as the clip maker's camera."""
    from PIL import Image

    image = torch.from_numpy(np.array(Image.fromarray(photo("flower")).resize((64, 64)))).permute(2, 0, 1)
    targets, _ = camera_targets(image.float()[None], move, 16)
    warped = targets[0].permute(1, 2, 3, 0).round().clamp(0, 255).byte().numpy()
    verb, direction = move.split()
    caption = f"camera {verb}s {direction}"
    truth = make_clip("flower", caption, 16, 64, np.random.default_rng(5))
    axis = move.split()[0]
    ours, theirs = camera_flow(warped, axis), camera_flow(truth, axis)
    assert np.sign(ours) == np.sign(theirs) and abs(ours) > 0.2
    assert 0.5 < ours / theirs < 2


def test_camera_flow_names_its_axes():
    with pytest.raises(CCDMError, match="unknown camera axis 'spin'; accepted: pan, tilt, zoom, rotate"):
        camera_flow(np.zeros((2, 16, 16, 3), np.uint8), "spin")
    assert camera_flow(np.zeros((1, 16, 16, 3), np.uint8), "pan") == 0.0


def test_progress_zero_is_the_identity():
    assert torch.equal(camera_theta("rotate clockwise", 0.0), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    anchor = torch.randn(1, 4, 8, 8)
    targets, valid = camera_targets(anchor, "zoom in", 5)
    assert torch.allclose(targets[:, :, 0], anchor, atol=1e-5) and bool(valid[:, :, 0].all())


def test_guidance_rules():
    g = torch.Generator().manual_seed(0)
    clip = torch.randn(2, 4, 6, 8, 8, generator=g)
    assert apply_camera(clip, "pan left", 0.0) is clip and apply_camera(clip, None, 1.0) is clip
    out = apply_camera(clip, "zoom out", 1.0, keyframes=[3])
    assert torch.equal(out[:, :, 0], clip[:, :, 0]) and torch.equal(out[:, :, 3], clip[:, :, 3])
    targets, valid = camera_targets(clip[:, :, 0], "zoom out", 6)
    inside = valid[0, 0, 5].bool()
    assert torch.equal(out[:, :, 5][..., inside], targets[:, :, 5][..., inside])  # weight 1: the warped frame 0
    assert torch.equal(out[:, :, 5][..., ~inside], clip[:, :, 5][..., ~inside]) and (~inside).any()  # left to the model
    alone = apply_camera(clip[1:], "zoom out", 1.0, keyframes=[3])
    assert torch.equal(out[1:], alone)  # videos of a batch never mix


@pytest.fixture(scope="module")
def model():
    return build_default_model()


def _settings(**kw):
    base = dict(prompt="a cat, camera pans left", frames=4, width=64, height=64, steps=2, seed=1)
    return VideoSettings(**{**base, **kw})


def test_pipeline_follows_the_prompted_move_and_off_means_off(model):
    auto, off, zero = (generate(model, None, _settings(**kw)) for kw in
                       ({}, {"camera": "none"}, {"camera_strength": 0.0}))
    assert "CCDM camera: pan left 1" in auto.infotext and "CCDM camera" not in off.infotext
    assert torch.equal(off.latents, zero.latents) and not torch.equal(auto.latents, off.latents)
    still = generate(model, None, _settings(frames=1))
    assert "CCDM camera" not in still.infotext


@pytest.mark.parametrize("kw, words", [({"camera": "left"}, "unknown camera move 'left'"),
                                       ({"camera_strength": 1.5}, "camera_strength")])
def test_bad_camera_settings_are_refused(kw, words):
    with pytest.raises(CCDMError, match=words):
        _settings(**kw)


def test_camera_check_counts_clips_that_follow_the_move(tmp_path):
    """The check's bookkeeping on a tiny random model: both arms per clip, signs against the clip maker's."""
    import json as _json

    from ccdm_core import new_motion_module
    from ccdm_core.quality import SubjectClassifier
    from ccdm_core.tensorfile import write_safetensors
    from train.mini import camera_check as check

    model = build_default_model()
    names = ["flower", "temple"]
    write_safetensors(SubjectClassifier(classes=2).state_dict(), tmp_path / "cls.safetensors",
                      {"ccdm.subjects": ",".join(names), "ccdm.captions": _json.dumps({n: n for n in names})})
    result = check.camera_check(model, new_motion_module(model.unet, max_frames=8), tmp_path / "cls.safetensors",
                                tmp_path / "out", moves=("pan left", "zoom out"), subjects=("flower",), seeds=(0,),
                                frames=3, steps=2)
    assert [(r["move"], r["camera"]) for r in result["rows"]] == [
        ("pan left", "none"), ("pan left", "auto"), ("zoom out", "none"), ("zoom out", "auto")]
    for row in result["rows"]:
        assert row["follows"] == (np.sign(row["flow_along_axis"]) == check.truth_sign(row["move"]))
    assert check.truth_sign("pan left") == 1.0 and check.truth_sign("zoom out") == -1.0
    assert result["summary"]["pan left"]["auto"]["clips"] == 1
    assert "| all |" in (tmp_path / "out" / "camera_check.md").read_text()
