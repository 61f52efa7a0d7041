"""Motion LoRAs merged into a motion module for a run: both file layouts, W + strength * alpha/rank * up @ down,
several LoRAs add, strength 0 and exit are bit-exact (the original tensors by identity, after errors too), and a LoRA
that does not fit is refused before anything changes."""
from __future__ import annotations

import pytest
import torch

from ccdm_core import CCDMError, new_motion_module
from ccdm_core.motion_lora import load_motion_lora, merged_motion_loras, motion_lora_from_state_dict
from ccdm_core.tensorfile import write_safetensors
from conftest import make_unet, randomize_

BLOCK = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0"


@pytest.fixture
def module():
    return randomize_(new_motion_module(make_unet(), "animatediff-v2", max_frames=8), seed=4)


def lora_state(module, rank=2, seed=0, projections=("q", "v", "out"), layout="animatediff", alpha=None):
    g = torch.Generator().manual_seed(seed)
    params = dict(module.named_parameters())
    state = {}
    for proj in projections:
        weight = params[f"{BLOCK}.to_{'out.0' if proj == 'out' else proj}.weight"]
        out_dim, in_dim = weight.shape
        down, up = torch.randn(rank, in_dim, generator=g), torch.randn(out_dim, rank, generator=g)
        if layout == "animatediff":
            state[f"{BLOCK}.processor.to_{proj}_lora.down.weight"] = down
            state[f"{BLOCK}.processor.to_{proj}_lora.up.weight"] = up
        else:
            key = "lora_unet_" + BLOCK.replace(".", "_") + f"_to_{'out_0' if proj == 'out' else proj}"
            state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"] = down, up
            if alpha is not None:
                state[f"{key}.alpha"] = torch.tensor(float(alpha))
    return state


def snapshot(module):
    """Each parameter's storage (`.data` is a new view object at every access) and values."""
    return {name: (p.data_ptr(), p.data.clone()) for name, p in module.named_parameters()}


def assert_restored(module, snap):
    for name, p in module.named_parameters():
        storage, values = snap[name]
        assert p.data_ptr() == storage and torch.equal(p.data, values), name


def test_the_merge_is_w_plus_strength_times_up_down_and_exit_restores(module):
    state = lora_state(module)
    lora = motion_lora_from_state_dict(state, "pan-left")
    assert lora.layout == "animatediff" and lora.rank == 2 and len(lora.pairs) == 3
    snap = snapshot(module)
    q = dict(module.named_parameters())[f"{BLOCK}.to_q.weight"]
    before = q.data.clone()
    with merged_motion_loras(module, [(lora, 0.5)]) as changed:
        assert changed == 3
        expected = before + 0.5 * state[f"{BLOCK}.processor.to_q_lora.up.weight"] @ \
            state[f"{BLOCK}.processor.to_q_lora.down.weight"]
        assert torch.allclose(q.data, expected, atol=1e-5)
    assert_restored(module, snap)


def test_kohya_layout_with_alpha_scales_by_alpha_over_rank(module):
    a = motion_lora_from_state_dict(lora_state(module, rank=4, layout="animatediff"), "a")
    k = motion_lora_from_state_dict(lora_state(module, rank=4, layout="kohya", alpha=2), "k")
    assert k.layout == "kohya"
    q = dict(module.named_parameters())[f"{BLOCK}.to_q.weight"]
    before = q.data.clone()
    with merged_motion_loras(module, [(a, 1.0)]):
        full = q.data - before
    with merged_motion_loras(module, [(k, 1.0)]):
        half = q.data - before
    assert torch.allclose(half, full * 0.5, atol=1e-5)  # same matrices, alpha 2 / rank 4


def test_several_loras_add_and_strength_zero_is_bit_identical(module):
    one = motion_lora_from_state_dict(lora_state(module, seed=1), "one")
    two = motion_lora_from_state_dict(lora_state(module, seed=2), "two")
    q = dict(module.named_parameters())[f"{BLOCK}.to_q.weight"]
    before = q.data.clone()
    with merged_motion_loras(module, [(one, 1.0)]):
        d1 = q.data - before
    with merged_motion_loras(module, [(two, 1.0)]):
        d2 = q.data - before
    with merged_motion_loras(module, [(one, 1.0), (two, 1.0)]):
        assert torch.allclose(q.data - before, d1 + d2, atol=1e-5)
    snap = snapshot(module)
    with merged_motion_loras(module, [(one, 0.0)]) as changed:
        assert changed == 0
        for name, p in module.named_parameters():
            assert p.data_ptr() == snap[name][0]


def test_an_error_inside_the_block_restores(module):
    lora = motion_lora_from_state_dict(lora_state(module), "x")
    snap = snapshot(module)
    with pytest.raises(RuntimeError):
        with merged_motion_loras(module, [(lora, 1.0)]):
            raise RuntimeError("interrupted")
    assert_restored(module, snap)


def test_a_lora_that_does_not_fit_is_refused_before_anything_changes(module):
    wide = randomize_(new_motion_module(make_unet(model_channels=64), "animatediff-v2", max_frames=8), seed=1)
    other = motion_lora_from_state_dict(lora_state(wide), "for-another-width")
    good = motion_lora_from_state_dict(lora_state(module), "good")
    snap = snapshot(module)
    with pytest.raises(CCDMError, match="for-another-width.*another width"):
        with merged_motion_loras(module, [(good, 1.0), (other, 1.0)]):
            pass
    assert_restored(module, snap)
    with pytest.raises(CCDMError, match="strength"):
        with merged_motion_loras(module, [(good, 3.0)]):
            pass


@pytest.mark.parametrize("bad, words", [
    ({"model.diffusion_model.x": torch.zeros(1)}, "not a motion LoRA key"),
    ({f"{BLOCK}.processor.to_q_lora.down.weight": torch.zeros(2, 4)}, "has no up matrix"),
    ({f"{BLOCK}.processor.to_q_lora.down.weight": torch.zeros(2, 4),
      f"{BLOCK}.processor.to_q_lora.up.weight": torch.zeros(4, 3)}, "not a rank-r pair"),
])
def test_bad_files_are_named(bad, words):
    with pytest.raises(CCDMError, match=words):
        motion_lora_from_state_dict(bad, "bad")


def test_files_load_with_their_hash(module, tmp_path):
    write_safetensors(lora_state(module), tmp_path / "v2_lora_ZoomIn.safetensors", {})
    lora = load_motion_lora(tmp_path / "v2_lora_ZoomIn.safetensors")
    assert lora.name == "v2_lora_ZoomIn" and len(lora.sha256) == 64


def test_motion_lora_names_say_which_camera_move_they_make():
    from ccdm_core.camera import MOVES
    from ccdm_core.motion_lora import lora_camera_move

    names = ["v2_lora_ZoomIn", "v2_lora_ZoomOut", "v2_lora_PanLeft", "v2_lora_PanRight", "v2_lora_TiltUp",
             "v2_lora_TiltDown", "v2_lora_RollingClockwise", "v2_lora_RollingAnticlockwise"]
    assert [lora_camera_move(n) for n in names] == list(MOVES)
    assert lora_camera_move("mm_sd15_dance") is None and lora_camera_move("Rolling Counter-Clockwise") == MOVES[-1]
