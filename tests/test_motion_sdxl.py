"""SDXL motion modules: AnimateDiff-SDXL and HotShot-XL files are recognised, load strictly and are inspected;
their temporal layers mix frames within a video only; SD1.x and SDXL modules are never taken for each other.

Fixtures are written from the published key layouts (guoyww/AnimateDiff branch sdxl, hotshotco/Hotshot-XL), not
from the engine's classes, at tiny widths: recognition depends on the 3-level, no-mid-block structure only.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ccdm_core import CCDMError, inject_motion, load_motion_module, new_motion_module, save_motion_module
from ccdm_core.motion import check_base, module_base, video_group_norm
from ccdm_core.motion_io import inspect_motion_file, motion_module_from_state_dict
from ccdm_core.motion_sdxl import hotshot_state_dict
from conftest import unet_inputs

ROOT = Path(__file__).resolve().parents[1]
TINY = (32, 64, 128)  # SDXL's 320/640/1280 at a tenth


def layer_shapes(c: int, table: str, pe_len: int) -> dict:
    """One temporal transformer: GroupNorm, proj_in, two temporal self-attentions with position tables, GEGLU."""
    shapes = {"norm.weight": (c,), "norm.bias": (c,), "proj_in.weight": (c, c), "proj_in.bias": (c,),
              "proj_out.weight": (c, c), "proj_out.bias": (c,)}
    blk = "transformer_blocks.0."
    for a in range(2):
        att = f"{blk}attention_blocks.{a}."
        shapes.update({att + "to_q.weight": (c, c), att + "to_k.weight": (c, c), att + "to_v.weight": (c, c),
                       att + "to_out.0.weight": (c, c), att + "to_out.0.bias": (c,),
                       f"{blk}norms.{a}.weight": (c,), f"{blk}norms.{a}.bias": (c,)})
        if table:
            shapes[att + table] = (1, pe_len, c)
    shapes.update({blk + "ff.net.0.proj.weight": (8 * c, c), blk + "ff.net.0.proj.bias": (8 * c,),
                   blk + "ff.net.2.weight": (c, 4 * c), blk + "ff.net.2.bias": (c,),
                   blk + "ff_norm.weight": (c,), blk + "ff_norm.bias": (c,)})
    return shapes


def sdxl_shapes(style: str, channels=TINY, pe_len=None, table=True) -> dict:
    """`animatediff`: down_blocks.i.motion_modules.j.temporal_transformer.*, `pe` tables (32 positions);
    `hotshot`: down_blocks.i.temporal_attentions.j.*, `positional_encoding` tables (24). 2 per down, 3 per up level,
    up levels deepest first, no mid block."""
    hotshot = style == "hotshot"
    pe_len = pe_len or (24 if hotshot else 32)
    name = ("pos_encoder.positional_encoding" if hotshot else "pos_encoder.pe") if table else ""
    out = {}
    for prefix, levels, per in (("down_blocks", channels, 2), ("up_blocks", tuple(reversed(channels)), 3)):
        for i, c in enumerate(levels):
            for j in range(per):
                slot = f"{prefix}.{i}.temporal_attentions.{j}." if hotshot else \
                    f"{prefix}.{i}.motion_modules.{j}.temporal_transformer."
                out.update({slot + k: v for k, v in layer_shapes(c, name, pe_len).items()})
    return out


def sdxl_state(style: str, seed: int = 0, **kwargs) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) * 0.1 for k, shape in sdxl_shapes(style, **kwargs).items()}


def sd1_v2_state(seed: int = 0) -> dict:
    """AnimateDiff v2's SD1.x layout (4 levels, mid block, 32 positions) at tiny widths."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    levels = {"down_blocks": ((32, 64, 128, 128), 2), "up_blocks": ((128, 128, 64, 32), 3)}
    for prefix, (widths, per) in levels.items():
        for i, c in enumerate(widths):
            for j in range(per):
                slot = f"{prefix}.{i}.motion_modules.{j}.temporal_transformer."
                out.update({slot + k: v for k, v in layer_shapes(c, "pos_encoder.pe", 32).items()})
    out.update({f"mid_block.motion_modules.0.temporal_transformer.{k}": v
                for k, v in layer_shapes(128, "pos_encoder.pe", 32).items()})
    return {k: torch.randn(shape, generator=g) * 0.1 for k, shape in out.items()}


def save(state: dict, path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:  # read back through the safe loader (torch.load weights_only=True)
        torch.save({"state_dict": state}, path)
    return path


EXPECTED = {  # format: (positions, training frames, schedule, UNet GroupNorms over frames, layer norm over frames)
    "animatediff": ("animatediff-sdxl", 32, 16, ("scaled_linear", 0.00085, 0.020), False, True),
    "hotshot": ("hotshot-xl", 24, 8, ("scaled_linear", 0.00085, 0.012), True, False),
}


def check_info(module, style: str, channels=TINY):
    fmt, positions, frames, schedule, unet_norms, layer_norms = EXPECTED[style]
    info = module.info
    assert info.format == fmt and module.max_frames == positions and info.train_frames == frames
    assert (info.beta_schedule, info.beta_start, info.beta_end) == schedule
    assert info.groupnorm_over_frames is unet_norms and info.temporal_norm_over_frames is layer_norms
    assert module_base(info) == "sdxl" == module.base and info.recommended_sampler is None
    assert module.shape.mid is None and len(module.slots()) == 15
    assert module.shape.down == tuple((c, c) for c in channels)
    assert module.shape.up == tuple((c, c, c) for c in reversed(channels))


def file_keys(module, style: str) -> dict:
    return hotshot_state_dict(module) if style == "hotshot" else module.state_dict()


@pytest.mark.parametrize("style", ["animatediff", "hotshot"])
@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_published_layouts_are_recognised_and_load_strictly(tmp_path, style, suffix):
    state = sdxl_state(style)
    module = load_motion_module(save(state, tmp_path / f"motion{suffix}"))
    check_info(module, style)
    loaded = file_keys(module, style)
    assert set(loaded) == set(state)  # nothing missing, nothing unexpected, names round-trip
    assert all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.parametrize("style", ["animatediff", "hotshot"])
def test_recognition_does_not_depend_on_the_widths(style):
    channels = (64, 96, 160)
    module = motion_module_from_state_dict(sdxl_state(style, channels=channels))
    check_info(module, style, channels)


def test_hotshot_variants_are_recognised(tmp_path):
    # sd-webui-animatediff's re-save: AnimateDiff's names, 24-position `pe` tables
    resaved = motion_module_from_state_dict(sdxl_state("animatediff", pe_len=24), name="mm_sdxl_hs.safetensors")
    check_info(resaved, "hotshot")
    # no tables at all: the file name decides, positions are the format's
    bare = sdxl_state("hotshot", table=False)
    check_info(motion_module_from_state_dict(bare, name="hsxl_temporal_layers.f16.safetensors"), "hotshot")
    check_info(motion_module_from_state_dict(bare, name="motion.safetensors"), "hotshot")  # HotShot's names decide
    plain = sdxl_state("animatediff", table=False)
    check_info(motion_module_from_state_dict(plain, name="mm_sdxl_v10_beta.ckpt"), "animatediff")
    check_info(motion_module_from_state_dict(plain, name="Hotshot-XL.ckpt"), "hotshot")


def test_missing_tables_are_recomputed_under_hotshot_names():
    module = motion_module_from_state_dict(sdxl_state("hotshot", table=False))
    table = hotshot_state_dict(module)["down_blocks.0.temporal_attentions.0.transformer_blocks.0.attention_blocks.0."
                                       "pos_encoder.positional_encoding"]
    assert table.shape == (1, 24, 32) and table[0, 0, 1] == 1.0 and table[0, 0, 0] == 0.0


def test_strict_loading_names_hotshot_keys():
    state = sdxl_state("hotshot")
    del state["up_blocks.2.temporal_attentions.1.proj_out.bias"]
    with pytest.raises(CCDMError, match=r"missing: up_blocks\.2\.temporal_attentions\.1\.proj_out\.bias"):
        motion_module_from_state_dict(state)
    state = sdxl_state("hotshot")
    state["down_blocks.0.temporal_attentions.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(CCDMError, match=r"unexpected: down_blocks\.0\.temporal_attentions\.0\.extra\.weight"):
        motion_module_from_state_dict(state)


def test_layouts_that_are_neither_are_refused_by_name():
    mixed = sdxl_state("hotshot")
    mixed.update({k: v for k, v in sdxl_state("animatediff").items() if k.startswith("up_blocks.0.")})
    with pytest.raises(CCDMError, match="mixes AnimateDiff .* and HotShot-XL"):
        motion_module_from_state_dict(mixed)
    with_mid = sdxl_state("animatediff")
    with_mid.update({f"mid_block.motion_modules.0.temporal_transformer.{k}": torch.zeros(v)
                     for k, v in layer_shapes(128, "pos_encoder.pe", 32).items()})
    with pytest.raises(CCDMError, match="3 down blocks .* and a mid block"):
        motion_module_from_state_dict(with_mid)
    sd1_hotshot = {k.replace(".motion_modules.", ".temporal_attentions.").replace(".temporal_transformer.", "."): v
                   for k, v in sd1_v2_state().items() if not k.startswith("mid_block.")}
    with pytest.raises(CCDMError, match="HotShot-XL key names .* 4 down blocks"):
        motion_module_from_state_dict(sd1_hotshot)
    no_up = {k: v for k, v in sdxl_state("animatediff").items() if not k.startswith("up_blocks.2.")}
    with pytest.raises(CCDMError, match="3 down blocks but 2 up blocks"):
        motion_module_from_state_dict(no_up)


def test_inspect_reports_sdxl_modules(tmp_path):
    for style, name in (("animatediff", "mm_sdxl_v10_beta.ckpt"), ("hotshot", "hsxl_temporal_layers.safetensors")):
        fmt, positions, frames, schedule, unet_norms, layer_norms = EXPECTED[style]
        info = inspect_motion_file(save(sdxl_state(style), tmp_path / name))
        assert (info["format"], info["base"], info["max_frames"], info["train_frames"]) == (fmt, "sdxl", positions,
                                                                                            frames)
        assert (info["beta_schedule"], info["beta_start"], info["beta_end"]) == schedule
        assert info["groupnorm_over_frames"] is unet_norms and info["temporal_norm_over_frames"] is layer_norms
        assert info["channels"] == list(TINY) and info["modules"] == 15 and info["mid_block"] is False
    sd1 = inspect_motion_file(save(sd1_v2_state(), tmp_path / "mm_sd_v15_v2.safetensors"))
    assert (sd1["format"], sd1["base"], sd1["temporal_norm_over_frames"]) == ("animatediff-v2", "sd1", False)


def test_cli_inspect_prints_hotshot(tmp_path):
    path = save(sdxl_state("hotshot"), tmp_path / "hsxl_temporal_layers.safetensors")
    done = subprocess.run([sys.executable, "-m", "ccdm_core", "inspect", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["format"], out["base"], out["max_frames"], out["train_frames"]) == ("hotshot-xl", "sdxl", 24, 8)


@pytest.mark.parametrize("style", ["animatediff", "hotshot"])
def test_each_layer_mixes_frames_within_a_video_and_not_across(style):
    module = motion_module_from_state_dict(sdxl_state(style, seed=4))
    frames, videos = 4, 2
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, layer in module.slots().items():
            c = layer.channels
            x = torch.randn(videos * frames, c, 4, 4, generator=g)
            y = layer(x, frames)
            changed = x.clone()
            changed[1] += torch.randn(c, 4, 4, generator=g)  # video 0, frame 1
            y2 = layer(changed, frames)
            assert y.shape == x.shape and y.isfinite().all(), name
            assert not torch.allclose(y2[0], y[0]), f"{name}: frame 0 did not see frame 1 of its video"
            assert torch.equal(y2[frames:], y[frames:]), f"{name}: video 1 saw a change in video 0"


def test_animatediff_sdxl_layer_norm_spans_the_frames_of_each_video():
    norm = torch.nn.GroupNorm(32, 64, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2 * 3, 64, 4, 4)
    video = x.reshape(2, 3, 64, 4, 4).permute(0, 2, 1, 3, 4)  # b c f h w, written without einops
    expected = norm(video).permute(0, 2, 1, 3, 4).reshape(6, 64, 4, 4)
    assert torch.allclose(video_group_norm(norm, x, 3), expected, atol=1e-5)
    layer = motion_module_from_state_dict(sdxl_state("animatediff", seed=2)).slots()["down_blocks.1.motion_modules.0"]
    per_frame = copy.deepcopy(layer)
    per_frame.temporal_transformer.norm_over_frames = False
    assert layer.temporal_transformer.norm_over_frames
    x = torch.randn(2 * 4, 64, 4, 4)
    x[4:] *= 3.0  # the second video is brighter: with statistics over its frames it is normalised as a whole
    with torch.no_grad():
        assert not torch.allclose(layer(x, 4), per_frame(x, 4))
        assert torch.allclose(layer(x, 1), per_frame(x, 1))  # one-frame videos: the same statistics


def test_sd1_and_sdxl_modules_are_not_taken_for_each_other(tmp_path, tiny_unet):
    sd1 = load_motion_module(save(sd1_v2_state(), tmp_path / "mm_sd_v15_v2.ckpt"))
    assert sd1.info.format == "animatediff-v2" and module_base(sd1.info) == "sd1"
    xl = load_motion_module(save(sdxl_state("animatediff"), tmp_path / "mm_sdxl_v10_beta.ckpt"))
    assert module_base(xl.info) == "sdxl"
    with pytest.raises(CCDMError, match="animatediff-sdxl, made for SDXL, but the loaded checkpoint is SD1.x"):
        check_base(xl.info, "sd1")
    with pytest.raises(CCDMError, match="animatediff-v2, made for SD1.x, but the loaded checkpoint is SDXL"):
        check_base(sd1.info, "sdxl")
    check_base(sd1.info, "sd1")
    check_base(xl.info, "sdxl")
    with pytest.raises(CCDMError, match="unknown model family 'sd2'"):
        check_base(sd1.info, "sd2")
    # the SD1.x injection refuses an SDXL module before changing the UNet
    before = {k: v.clone() for k, v in tiny_unet.state_dict().items()}
    children = [list(b._modules.values()) for b in tiny_unet.output_blocks]
    with pytest.raises(CCDMError):
        with inject_motion(tiny_unet, xl, num_frames=4):
            pass
    assert all(torch.equal(before[k], v) for k, v in tiny_unet.state_dict().items())
    assert [list(b._modules.values()) for b in tiny_unet.output_blocks] == children
    with torch.no_grad():
        assert tiny_unet(*unet_inputs(frames=2)).isfinite().all()


@pytest.mark.parametrize("style", ["animatediff", "hotshot"])
def test_ccdm_resave_keeps_the_family_and_norms(tmp_path, style):
    module = motion_module_from_state_dict(sdxl_state(style, seed=7))
    save_motion_module(module, tmp_path / "m.safetensors")
    again = load_motion_module(tmp_path / "m.safetensors")
    assert again.info.format == "ccdm" and again.base == "sdxl" and again.max_frames == module.max_frames
    for field in ("beta_schedule", "beta_start", "beta_end", "groupnorm_over_frames", "temporal_norm_over_frames",
                  "train_frames"):
        assert getattr(again.info, field) == getattr(module.info, field), field
    a, b = module.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sd1_files_keep_their_metadata(tmp_path, tiny_unet):
    from ccdm_core.tensorfile import read_tensors

    save_motion_module(new_motion_module(tiny_unet), tmp_path / "m.safetensors")
    _, metadata = read_tensors(tmp_path / "m.safetensors")
    assert "ccdm.base" not in metadata and "ccdm.temporal_norm_over_frames" not in metadata
    assert load_motion_module(tmp_path / "m.safetensors").base == "sd1"
