"""SDXL's dict conditioning through keyframe prompts: the `crossattn` rows and the pooled `vector` rows of every
frame are interpolated between the keyframes around it (the same weights), other entries pass through, and the
rows of one video never read another's."""
from __future__ import annotations

import torch

from ccdm_core.webui.guidance import PromptSchedule, frame_conditioning


def _schedule(frames=4):
    g = torch.Generator().manual_seed(0)
    key = {"crossattn": torch.randn(5, 6, generator=g), "vector": torch.randn(3, generator=g)}
    weights = torch.stack([torch.tensor([1 - i / (frames - 1), i / (frames - 1)]) for i in range(frames)])
    return PromptSchedule(keys={0: None, frames - 1: "b"}, weights=weights, cond_at=lambda text, step: key), key


def test_crossattn_and_vector_rows_are_interpolated_and_the_rest_passes_through():
    schedule, key = _schedule()
    g = torch.Generator().manual_seed(1)
    cond = {"crossattn": torch.randn(8, 5, 6, generator=g), "vector": torch.randn(8, 3, generator=g),
            "c_concat": torch.randn(8, 5, 2, 2, generator=g)}
    out = schedule.apply(cond, step=0)
    assert out["c_concat"] is cond["c_concat"]
    assert out.shape == cond["crossattn"].shape  # the WebUI's CFG denoiser reads `text_cond.shape`
    assert torch.equal(out["crossattn"], frame_conditioning(cond["crossattn"], schedule.weights,
                                                             [None, key["crossattn"]]))
    for video in range(2):
        rows = out["vector"][video * 4:(video + 1) * 4]
        own = cond["vector"][video * 4:(video + 1) * 4]
        assert torch.equal(rows[0], own[0]) and torch.equal(rows[3], key["vector"])  # the keys' own frames
        assert torch.allclose(rows[1], own[1] * (2 / 3) + key["vector"] / 3)  # between them, by the weights
    other = dict(cond, vector=cond["vector"].clone())
    other["vector"][4:] += 5.0  # the second video changes: the first video's rows do not
    assert torch.equal(schedule.apply(other, step=0)["vector"][:4], out["vector"][:4])


def test_sd1_tensors_are_unchanged_by_the_dict_path():
    schedule, key = _schedule()
    schedule.cond_at = lambda text, step: key["crossattn"]
    cond = torch.randn(4, 5, 6)
    assert torch.equal(schedule.apply(cond, 0), frame_conditioning(cond, schedule.weights, [None, key["crossattn"]]))
