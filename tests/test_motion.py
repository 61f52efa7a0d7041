"""Motion module: fresh = identity, exact restore, frame mixing within a video only, v1 GroupNorm, fit checks."""
from __future__ import annotations

import pytest
import torch

from ccdm_core import CCDMError, inject_motion, new_motion_module
from ccdm_core.inject import TemporalSlot
from conftest import make_unet, randomize_, unet_inputs


def state_copy(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def children_ids(unet):
    return [(name, id(m)) for name, m in unet.named_modules()]


@torch.no_grad()
def test_fresh_module_is_identity(tiny_unet):
    x, t, ctx = unet_inputs(frames=4, videos=2)
    before = tiny_unet(x, t, ctx)
    module = new_motion_module(tiny_unet)
    with inject_motion(tiny_unet, module, num_frames=4):
        during = tiny_unet(x, t, ctx)
    assert torch.equal(before, during)


@torch.no_grad()
def test_injection_changes_output_and_restores_exactly(tiny_unet):
    x, t, ctx = unet_inputs(frames=4, videos=2)
    state, ids = state_copy(tiny_unet), children_ids(tiny_unet)
    before = tiny_unet(x, t, ctx)
    module = randomize_(new_motion_module(tiny_unet))
    with inject_motion(tiny_unet, module, num_frames=4):
        assert sum(isinstance(m, TemporalSlot) for m in tiny_unet.modules()) == 21
        during = tiny_unet(x, t, ctx)
    assert not torch.allclose(before, during)
    assert children_ids(tiny_unet) == ids
    assert_same_state(state, tiny_unet.state_dict())
    assert torch.equal(tiny_unet(x, t, ctx), before)


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
@torch.no_grad()
def test_restores_on_exception_and_interrupt(tiny_unet, exc):
    x, t, ctx = unet_inputs(frames=2)
    before, ids = tiny_unet(x, t, ctx), children_ids(tiny_unet)
    module = randomize_(new_motion_module(tiny_unet, layout="animatediff-v1", max_frames=24))
    with pytest.raises(type(exc)):
        with inject_motion(tiny_unet, module, num_frames=2):
            tiny_unet(x, t, ctx)
            raise exc
    assert children_ids(tiny_unet) == ids
    assert not any("forward" in m.__dict__ for m in tiny_unet.modules())
    assert torch.equal(tiny_unet(x, t, ctx), before)


@torch.no_grad()
def test_frames_mix_within_a_video_only(tiny_unet):
    """2 videos x 4 frames: changing frame 1 of video 0 changes video 0's other frames, nothing of video 1."""
    module = randomize_(new_motion_module(tiny_unet))
    x, t, ctx = unet_inputs(frames=4, videos=2)
    x2 = x.clone()
    x2[1] += 1.0
    with inject_motion(tiny_unet, module, num_frames=4):
        a, b = tiny_unet(x, t, ctx), tiny_unet(x2, t, ctx)
    diff = (a - b).flatten(1).abs().amax(1)
    assert all(diff[i] > 1e-4 for i in (0, 2, 3)), diff
    assert torch.equal(a[4:], b[4:])


@torch.no_grad()
def test_v1_groupnorm_over_frames_couples_frames_and_restores(tiny_unet):
    """With only GroupNorm patched (a fresh = identity module), v1 still couples frames of one video."""
    module = new_motion_module(tiny_unet, layout="animatediff-v1", max_frames=24)
    assert module.info.groupnorm_over_frames
    x, t, ctx = unet_inputs(frames=3, videos=2)
    x2 = x.clone()
    x2[0] += 2.0
    plain = tiny_unet(x, t, ctx)
    with inject_motion(tiny_unet, module, num_frames=3):
        a, b = tiny_unet(x, t, ctx), tiny_unet(x2, t, ctx)
        assert not torch.allclose(a, plain)
    assert (a[1:3] - b[1:3]).abs().max() > 1e-5
    assert torch.equal(a[3:], b[3:])
    assert torch.equal(tiny_unet(x, t, ctx), plain)


@torch.no_grad()
def test_num_frames_is_changed_through_the_handle(tiny_unet):
    module = randomize_(new_motion_module(tiny_unet, max_frames=8))
    x, t, ctx = unet_inputs(frames=4, videos=2)
    with inject_motion(tiny_unet, module, num_frames=8) as handle:
        as_one = tiny_unet(x, t, ctx)
        handle.num_frames = 4
        as_two = tiny_unet(x, t, ctx)
        with pytest.raises(CCDMError, match="1..8"):
            handle.num_frames = 9
        handle.num_frames = 3
        with pytest.raises(CCDMError, match="not a whole number"):
            tiny_unet(x, t, ctx)
    assert not torch.allclose(as_one, as_two)


def test_fit_is_checked_before_touching_the_unet():
    small, wide = make_unet(model_channels=32), make_unet(model_channels=64)
    module = new_motion_module(wide)
    ids = children_ids(small)
    with pytest.raises(CCDMError, match="64 channels but the UNet's input_blocks.1 has 32"):
        with inject_motion(small, module, num_frames=2):
            pass
    assert children_ids(small) == ids


def test_sdxl_unet_is_refused(tiny_unet):
    tiny_unet.adm_in_channels = 2816
    with pytest.raises(CCDMError, match="SDXL"):
        new_motion_module(tiny_unet)


def test_layouts_have_the_right_slots(tiny_unet):
    v2 = new_motion_module(tiny_unet, "animatediff-v2")
    v3 = new_motion_module(tiny_unet, "animatediff-v3")
    assert len(v2.slots()) == 21 and len(v3.slots()) == 20
    assert v2.down_channels() == [32, 64, 128, 128]
    assert [len(b) for b in v2.shape.up] == [3, 3, 3, 3]
    with pytest.raises(CCDMError, match="unknown layout"):
        new_motion_module(tiny_unet, "v9")
