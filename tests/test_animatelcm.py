"""AnimateLCM motion modules: recognised by their keys (or their file name), 64 positions, linear schedule, LCM.

Fixtures are tiny modules built with the engine's own constructor in AnimateDiff v2's layout, then written the way
the AnimateLCM release is: the same keys with no `pos_encoder` tables at all (or, as AnimateLCM's own model code
names them, `pos_encoder.pos_encoding` tables of 64 positions).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ccdm_core import CCDMError, inject_motion, load_motion_module, new_motion_module
from ccdm_core.motion import sinusoidal_positions
from ccdm_core.motion_io import inspect_motion_file, motion_module_from_state_dict
from conftest import make_unet, randomize_, unet_inputs

ROOT = Path(__file__).resolve().parents[1]


def v2_state(pe_len: int = 32, seed: int = 3):
    """A tiny AnimateDiff v2 state dict (mid block, 21 slots) with random weights and `pe` tables of pe_len."""
    module = randomize_(new_motion_module(make_unet(), "animatediff-v2", max_frames=pe_len), seed=seed)
    return {k: v.clone() for k, v in module.state_dict().items()}


def animatelcm_state(tables: str = "none"):
    """The AnimateLCM layout: v2's keys; `none`: no position tables (the release), `pos_encoding`: the tables
    under AnimateLCM's code's buffer name, 64 positions."""
    state = v2_state(pe_len=64)
    out = {}
    for key, value in state.items():
        if key.endswith("pos_encoder.pe"):
            if tables == "pos_encoding":
                out[key[: -len("pe")] + "pos_encoding"] = value
            continue
        out[key] = value
    return out


def save(state, path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)  # read back through the safe loader (torch.load weights_only=True)
    return path


def check_animatelcm(module, frames: int = 64):
    info = module.info
    assert info.format == "animatelcm" and module.max_frames == frames
    assert (info.beta_schedule, info.beta_start, info.beta_end) == ("linear", 0.00085, 0.012)
    assert info.groupnorm_over_frames is False and info.recommended_sampler == "lcm"
    assert module.shape.mid is not None and len(module.slots()) == 21


@pytest.mark.parametrize("name", ["AnimateLCM_sd15_t2v.ckpt", "AnimateLCM_sd15_t2v.safetensors",
                                  "motion.ckpt", "motion.safetensors"])
def test_release_layout_is_recognised_and_loads_strictly(tmp_path, name):
    """No `pos_encoder` key and a mid block: AnimateLCM by its keys alone, whatever the file is called."""
    state = animatelcm_state()
    assert not any("pos_encoder" in k for k in state)
    module = load_motion_module(save(state, tmp_path / name))
    check_animatelcm(module)
    loaded = module.state_dict()
    pe_keys = {k for k in loaded if k.endswith("pos_encoder.pe")}
    assert set(loaded) - pe_keys == set(state) and len(pe_keys) == 42  # nothing missing, nothing unexpected
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    for key in pe_keys:  # recomputed: the sinusoidal table of 64 positions
        assert torch.equal(loaded[key], sinusoidal_positions(64, loaded[key].shape[-1]))


def test_tables_under_animatelcm_code_name_are_recognised(tmp_path):
    state = animatelcm_state(tables="pos_encoding")
    module = load_motion_module(save(state, tmp_path / "motion.safetensors"))
    check_animatelcm(module)
    loaded = module.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key.replace("pos_encoder.pos_encoding", "pos_encoder.pe")], value)


def test_name_rule_for_copies_with_pe_tables(tmp_path):
    """A file called *AnimateLCM* with `pe` tables (a re-save) is AnimateLCM; its positions come from the table."""
    module = load_motion_module(save(v2_state(pe_len=64), tmp_path / "mm_sd15_AnimateLCM.safetensors"))
    check_animatelcm(module, frames=64)
    module = load_motion_module(save(v2_state(pe_len=32), tmp_path / "my-animatelcm-copy.ckpt"))
    check_animatelcm(module, frames=32)


@pytest.mark.parametrize("name", ["mm_sd_v15_v2.ckpt", "mm.safetensors", "lcm_motion.safetensors"])
def test_plain_animatediff_is_not_animatelcm(tmp_path, name):
    module = load_motion_module(save(v2_state(pe_len=32), tmp_path / name))
    assert module.info.format == "animatediff-v2" and module.max_frames == 32
    assert module.info.recommended_sampler is None
    v3 = {k: v for k, v in v2_state().items() if not k.startswith("mid_block.")}
    module = load_motion_module(save(v3, tmp_path / ("v3_" + name)))
    assert module.info.format == "animatediff-v3" and module.info.recommended_sampler is None
    no_mid_no_pe = {k: v for k, v in v3.items() if not k.endswith("pos_encoder.pe")}
    assert motion_module_from_state_dict(no_mid_no_pe, name="v3_sd15_mm.ckpt").info.format == "animatediff-v3"


def test_runs_as_animatediff_v2_architecture(tmp_path):
    """Same weights, same outputs as the v2 module they came from (positions beyond 32 aside), and windows of up
    to 64 frames, which a 32-position v2 module refuses."""
    v2 = motion_module_from_state_dict(v2_state(pe_len=32))
    lcm = load_motion_module(save(animatelcm_state(), tmp_path / "AnimateLCM_sd15_t2v.ckpt"))
    unet = make_unet()
    x, t, ctx = unet_inputs(frames=4)
    with torch.no_grad():
        with inject_motion(unet, v2, num_frames=4):
            y_v2 = unet(x, t, ctx)
        with inject_motion(unet, lcm, num_frames=4):
            y_lcm = unet(x, t, ctx)
    assert y_lcm.isfinite().all() and torch.allclose(y_lcm, y_v2, atol=1e-5)
    x, t, ctx = unet_inputs(frames=40)
    with torch.no_grad(), inject_motion(unet, lcm, num_frames=40):
        assert unet(x, t, ctx).isfinite().all()
    with pytest.raises(CCDMError, match="accepts 1..32 frames"):
        with torch.no_grad(), inject_motion(unet, v2, num_frames=40):
            unet(x, t, ctx)


def test_inspect_reports_animatelcm(tmp_path):
    path = save(animatelcm_state(), tmp_path / "AnimateLCM_sd15_t2v.ckpt")
    info = inspect_motion_file(path)
    assert info["format"] == "animatelcm" and info["max_frames"] == 64 and info["mid_block"] is True
    assert (info["beta_schedule"], info["beta_start"], info["beta_end"]) == ("linear", 0.00085, 0.012)
    assert info["recommended_sampler"] == "lcm" and info["groupnorm_over_frames"] is False
    assert info["modules"] == 21 and len(info["sha256"]) == 64
    plain = inspect_motion_file(save(v2_state(), tmp_path / "mm_sd_v15_v2.safetensors"))
    assert plain["format"] == "animatediff-v2" and plain["recommended_sampler"] is None


def test_cli_inspect_prints_animatelcm(tmp_path):
    """`ccdm inspect FILE` (run as `python -m ccdm_core`, as a user would)."""
    import json

    path = save(animatelcm_state(), tmp_path / "motion.safetensors")
    done = subprocess.run([sys.executable, "-m", "ccdm_core", "inspect", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["format"], out["max_frames"], out["beta_schedule"]) == ("animatelcm", 64, "linear")
    assert out["recommended_sampler"] == "lcm"


def test_animatelcm_i2v_encoder_is_refused_by_name():
    state = animatelcm_state()
    state["img_encoder.conv_in.weight"] = torch.zeros(4, 4, 3, 3)
    with pytest.raises(CCDMError, match="AnimateLCM-I2V"):
        motion_module_from_state_dict(state, name="AnimateLCM_sd15_i2v.ckpt")
