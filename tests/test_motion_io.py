"""Motion checkpoints: AnimateDiff v1/v2/v3 key layouts load strictly and are recognised; round trips; refusals."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from ccdm_core import CCDMError, inject_motion, load_motion_module, new_motion_module, save_motion_module
from ccdm_core.motion_io import inspect_motion_file, motion_module_from_state_dict
from conftest import randomize_, unet_inputs


def animatediff_shapes(channels=(32, 64, 128, 128), mid=True, pe_len=32, with_pe=True):
    """Key -> shape, written from AnimateDiff's published layout, independently of the engine's classes."""
    out = {}

    def slot(prefix, c):
        base, blk = f"{prefix}.temporal_transformer.", "transformer_blocks.0."
        shapes = {"norm.weight": (c,), "norm.bias": (c,), "proj_in.weight": (c, c), "proj_in.bias": (c,),
                  "proj_out.weight": (c, c), "proj_out.bias": (c,)}
        for a in range(2):
            ab = f"{blk}attention_blocks.{a}."
            shapes.update({ab + "to_q.weight": (c, c), ab + "to_k.weight": (c, c), ab + "to_v.weight": (c, c),
                           ab + "to_out.0.weight": (c, c), ab + "to_out.0.bias": (c,),
                           f"{blk}norms.{a}.weight": (c,), f"{blk}norms.{a}.bias": (c,)})
            if with_pe:
                shapes[ab + "pos_encoder.pe"] = (1, pe_len, c)
        shapes.update({blk + "ff.net.0.proj.weight": (8 * c, c), blk + "ff.net.0.proj.bias": (8 * c,),
                       blk + "ff.net.2.weight": (c, 4 * c), blk + "ff.net.2.bias": (c,),
                       blk + "ff_norm.weight": (c,), blk + "ff_norm.bias": (c,)})
        out.update({base + k: v for k, v in shapes.items()})

    for i, c in enumerate(channels):
        for j in range(2):
            slot(f"down_blocks.{i}.motion_modules.{j}", c)
    if mid:
        slot("mid_block.motion_modules.0", channels[-1])
    for i, c in enumerate(reversed(channels)):
        for j in range(3):
            slot(f"up_blocks.{i}.motion_modules.{j}", c)
    return out


def animatediff_state_dict(channels=(32, 64, 128, 128), mid=True, pe_len=32, seed=0, with_pe=True):
    g = torch.Generator().manual_seed(seed)
    shapes = animatediff_shapes(channels, mid, pe_len, with_pe)
    return {k: torch.randn(shape, generator=g) * 0.1 for k, shape in shapes.items()}


@pytest.mark.parametrize("mid,pe_len,fmt", [(False, 24, "animatediff-v1"), (True, 32, "animatediff-v2"),
                                            (False, 32, "animatediff-v3")])
def test_animatediff_layouts_load_strictly_and_are_recognised(tmp_path, mid, pe_len, fmt, tiny_unet):
    state = animatediff_state_dict(mid=mid, pe_len=pe_len)
    path = tmp_path / "mm.ckpt"
    torch.save({"state_dict": state}, path)
    module = load_motion_module(path)
    assert module.info.format == fmt
    assert module.max_frames == pe_len
    assert module.info.groupnorm_over_frames == (fmt == "animatediff-v1")
    assert module.info.beta_schedule == "linear"
    loaded = module.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    with inject_motion(tiny_unet, module, num_frames=4), torch.no_grad():
        assert tiny_unet(*unet_inputs(frames=4)).isfinite().all()


def test_engine_layout_matches_sd15_animatediff_shapes():
    """new_motion_module on a real SD1.5-size UNet (meta device) has exactly AnimateDiff v2's keys and shapes."""
    from ccdm_core.sd.configs import build_unet, sd15_unet_config

    with torch.device("meta"):
        module = new_motion_module(build_unet(sd15_unet_config()), "animatediff-v2")
    got = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert got == animatediff_shapes((320, 640, 1280, 1280))
    # 22 C^2 multiply-adds per position: 453 M parameters in the v2 layout at SD1.5 widths
    assert 450e6 < sum(p.numel() for p in module.parameters()) < 456e6


def test_missing_positions_are_recomputed(tmp_path):
    # without a mid block (v3's layout): a mid block and no positions at all is AnimateLCM's file (test_animatelcm)
    full = animatediff_state_dict(mid=False)
    no_pe = {k: v for k, v in full.items() if not k.endswith("pos_encoder.pe")}
    save_file(no_pe, str(tmp_path / "mm.safetensors"))
    module = load_motion_module(tmp_path / "mm.safetensors")
    assert module.info.format == "animatediff-v3"
    pe = module.state_dict()
    key = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"
    assert pe[key][0, 0, 1] == 1.0 and pe[key][0, 0, 0] == 0.0  # sin(0)=0, cos(0)=1


def test_save_load_round_trip_is_exact(tmp_path, tiny_unet):
    module = randomize_(new_motion_module(tiny_unet)).requires_grad_(False)  # same kernels as the loaded one
    sha = save_motion_module(module, tmp_path / "m.safetensors", {"ccdm.base_model_sha256": "ab" * 32,
                                                                     "ccdm.train_config": {"steps": 3}})
    loaded = load_motion_module(tmp_path / "m.safetensors")
    assert loaded.info.format == "ccdm" and loaded.info.sha256 == sha and len(sha) == 64
    a, b = module.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    info = inspect_motion_file(tmp_path / "m.safetensors")
    assert info["shorthash"] == sha[:10] and info["channels"] == [32, 64, 128, 128] and info["modules"] == 21
    assert info["metadata"]["ccdm.base_model_sha256"] == "ab" * 32
    assert json.loads(info["metadata"]["ccdm.train_config"]) == {"steps": 3}
    x, t, ctx = unet_inputs(frames=3)
    with torch.no_grad():
        with inject_motion(tiny_unet, module, 3):
            ya = tiny_unet(x, t, ctx)
        with inject_motion(tiny_unet, loaded, 3):
            yb = tiny_unet(x, t, ctx)
    assert torch.equal(ya, yb)


def test_refusals(tmp_path):
    cases = {
        "sd.safetensors": ({"model.diffusion_model.out.0.weight": torch.zeros(4)}, "Stable Diffusion checkpoint"),
        "lora.safetensors": ({"lora_unet_down.lora_up.weight": torch.zeros(4)}, "LoRA"),
        "x.safetensors": ({"foo.weight": torch.zeros(4)}, "no motion-module weights"),
    }
    for name, (state, words) in cases.items():
        save_file(state, str(tmp_path / name))
        with pytest.raises(CCDMError, match=words):
            load_motion_module(tmp_path / name)
    xl = {k: v for k, v in animatediff_state_dict((32, 64, 128), mid=False).items()}
    save_file(xl, str(tmp_path / "xl.safetensors"))
    assert load_motion_module(tmp_path / "xl.safetensors").info.format == "animatediff-sdxl"  # test_motion_sdxl
    good = tmp_path / "good.safetensors"
    save_file(animatediff_state_dict(), str(good))
    (tmp_path / "trunc.safetensors").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CCDMError, match="unreadable"):
        load_motion_module(tmp_path / "trunc.safetensors")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(CCDMError, match="unreadable"):
        load_motion_module(tmp_path / "text.ckpt")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(CCDMError, match="unsupported file type"):
        load_motion_module(tmp_path / "a.txt")
    with pytest.raises(CCDMError, match="no such file"):
        load_motion_module(tmp_path / "missing.safetensors")


def test_pickle_needing_code_is_refused(tmp_path):
    code = ("import torch, collections\n"
            "class Evil:\n    pass\n"
            f"torch.save({{'state_dict': Evil()}}, {str(tmp_path / 'evil.ckpt')!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(CCDMError, match="needs code"):
        load_motion_module(tmp_path / "evil.ckpt")


def test_unexpected_and_missing_keys_are_named():
    state = animatediff_state_dict()
    state["down_blocks.0.something_else"] = torch.zeros(1)
    with pytest.raises(CCDMError, match="unexpected keys"):
        motion_module_from_state_dict(state)
    state = animatediff_state_dict()
    del state["up_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.ff.net.2.bias"]
    with pytest.raises(CCDMError, match="missing"):
        motion_module_from_state_dict(state)


def test_non_tensor_files_and_failed_saves_leave_nothing(tmp_path, tiny_unet, monkeypatch):
    torch.save({"state_dict": {"a": 1, "b": "text"}}, tmp_path / "plain.ckpt")
    with pytest.raises(CCDMError, match="contains no tensors"):
        load_motion_module(tmp_path / "plain.ckpt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CCDMError, match="not a dictionary of tensors"):
        load_motion_module(tmp_path / "list.pt")
    module = new_motion_module(tiny_unet)
    target = tmp_path / "out" / "m.safetensors"
    save_motion_module(module, target)
    before = target.read_bytes()
    import ccdm_core.tensorfile

    def broken(*args, **kwargs):  # the temporary file is written, then moving it into place fails
        raise OSError("disk full")
    monkeypatch.setattr(ccdm_core.tensorfile.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        save_motion_module(randomize_(module), target)
    assert target.read_bytes() == before and sorted(p.name for p in target.parent.iterdir()) == ["m.safetensors"]
    with pytest.raises(CCDMError, match=".safetensors only"):
        save_motion_module(module, tmp_path / "m.ckpt")


def test_loading_does_not_depend_on_load_state_dict(tmp_path, monkeypatch):
    """While the WebUI loads a checkpoint it replaces Module.load_state_dict for every module (returning None):
    the module listing must still load motion modules then."""
    import torch

    from ccdm_core import new_motion_module, save_motion_module
    from ccdm_core.motion_io import load_motion_module
    from conftest import make_unet, randomize_

    module = randomize_(new_motion_module(make_unet(), "animatediff-v2", max_frames=8), seed=2)
    save_motion_module(module, tmp_path / "m.safetensors")
    monkeypatch.setattr(torch.nn.Module, "load_state_dict", lambda self, *a, **k: None)
    loaded = load_motion_module(tmp_path / "m.safetensors")
    expected = {k: v for k, v in module.state_dict().items() if not k.endswith("pe")}
    got = loaded.state_dict()
    assert all(torch.allclose(got[k].float(), v.float()) for k, v in expected.items())
