"""`ccdm bench quality` runs every arm and the beta ablation and writes its table (tiny random parts)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from ccdm_core import CCDMError, new_motion_module
from ccdm_core.quality import SubjectClassifier, bench_quality, markdown_table
from ccdm_core.sd.loader import build_default_model
from ccdm_core.tensorfile import write_safetensors


def test_every_arm_is_scored_and_written(tmp_path):
    model = build_default_model()
    linear = new_motion_module(model.unet, max_frames=8)
    scaled = new_motion_module(model.unet, max_frames=8)
    scaled.info = dataclasses.replace(scaled.info, beta_schedule="scaled_linear")
    classifier = SubjectClassifier(classes=2)
    write_safetensors(classifier.state_dict(), tmp_path / "cls.safetensors",
                      {"ccdm.subjects": "cat,flower", "ccdm.captions": json.dumps({"cat": "a cat", "flower": "a flower"})})
    result = bench_quality(model, {"linear": linear, "scaled_linear": scaled}, tmp_path / "cls.safetensors",
                           tmp_path / "out", seeds=(0,), frames=3, steps=1, prompts=1)
    assert set(result["arms"]) == {"a_base_per_frame", "b_motion_only", "c_ccdm", "d_ccdm_anchor_first",
                                   "b_motion_only_scaled_linear_module", "c_ccdm_scaled_linear_module"}
    b, c = result["arms"]["b_motion_only"], result["arms"]["c_ccdm"]
    assert result["ratios"]["warp_error_c_over_b"] == round(c["warp_error"] / b["warp_error"], 3)
    for values in result["arms"].values():
        assert 0 <= values["subject_fidelity_pct"] <= 100 and values["warp_error"] is not None
    assert "| c_ccdm |" in (tmp_path / "out" / "quality.md").read_text()
    assert json.loads((tmp_path / "out" / "quality.json").read_text())["prompts"] == 1
    assert markdown_table(result).count("\n") >= 7
    swapped = bench_quality(model, {"linear": linear, "scaled_linear": scaled}, tmp_path / "cls.safetensors",
                            tmp_path / "out2", seeds=(0,), frames=3, steps=1, prompts=1, primary="scaled_linear")
    assert swapped["primary_module"] == "scaled_linear" and "c_ccdm_linear_module" in swapped["arms"]
    assert swapped["arms"]["c_ccdm_linear_module"] == result["arms"]["c_ccdm"]  # same clips, roles swapped
    with pytest.raises(CCDMError, match="unknown primary module"):
        bench_quality(model, {"linear": linear, "scaled_linear": scaled}, tmp_path / "cls.safetensors",
                      tmp_path / "out", primary="cosine")
    with pytest.raises(CCDMError, match="linear and the scaled-linear"):
        bench_quality(model, {"linear": linear}, tmp_path / "cls.safetensors", tmp_path / "out")


def test_fusion_sweep_uses_held_out_subjects_and_compares_to_motion_only(tmp_path, monkeypatch):
    from train.mini import fusion_sweep

    monkeypatch.setattr(fusion_sweep, "GRID", {"fusion_strength": (0.0, 1.0), "cross_frame_strength": (0.0,),
                                               "end_fraction": (1.0,)})
    monkeypatch.setattr(fusion_sweep, "HELD_OUT_SEEDS", (0,))
    model = build_default_model()
    names = [f"s{i}" for i in range(9)]  # the benchmark takes the first 8 subjects; the sweep only the rest
    classifier = SubjectClassifier(classes=len(names))
    write_safetensors(classifier.state_dict(), tmp_path / "cls.safetensors",
                      {"ccdm.subjects": ",".join(names), "ccdm.captions": json.dumps({n: f"a {n}" for n in names})})
    result = fusion_sweep.sweep(model, new_motion_module(model.unet, max_frames=8), tmp_path / "cls.safetensors",
                                tmp_path / "out", frames=3, steps=2)
    assert result["subjects"] == ["s8"]
    off, on = result["ratios"]["fusion 0, cross-frame 0, end 1"], result["ratios"]["fusion 1, cross-frame 0, end 1"]
    assert off["warp_error_over_b"] == 1.0 and off["ssim_minus_b"] == 0.0  # fusion off is the motion-only arm
    assert result["arms"]["fusion 1, cross-frame 0, end 1"] != result["arms"]["b_motion_only"]
    assert on["fidelity_a_minus_this"] == (result["arms"]["a_base_per_frame"]["subject_fidelity_pct"]
                                           - result["arms"]["fusion 1, cross-frame 0, end 1"]["subject_fidelity_pct"])
    assert (tmp_path / "out" / "fusion_sweep.md").read_text().count("\n") == 4


def test_freeinit_sweep_compares_iterations_with_fusion_at_its_defaults(tmp_path, monkeypatch):
    from train.mini import fusion_sweep, freeinit_sweep

    monkeypatch.setattr(freeinit_sweep, "HELD_OUT_SEEDS", (0,))
    monkeypatch.setattr(freeinit_sweep, "ITERATIONS", (1, 2))
    model = build_default_model()
    names = [f"s{i}" for i in range(9)]
    classifier = SubjectClassifier(classes=len(names))
    write_safetensors(classifier.state_dict(), tmp_path / "cls.safetensors",
                      {"ccdm.subjects": ",".join(names), "ccdm.captions": json.dumps({n: f"a {n}" for n in names})})
    result = freeinit_sweep.sweep(model, new_motion_module(model.unet, max_frames=8), tmp_path / "cls.safetensors",
                                  tmp_path / "out", frames=3, steps=2)
    assert result["subjects"] == ["s8"] and fusion_sweep.HELD_OUT_SEEDS == (100, 101)
    arms = result["arms"]
    assert set(arms) == {"a_base_per_frame", "b_motion_only", "c_ccdm_freeinit_1", "c_ccdm_freeinit_2"}
    assert arms["c_ccdm_freeinit_1"] != arms["c_ccdm_freeinit_2"]  # the second pass changes the clip
    assert result["arm_seconds"]["c_ccdm_freeinit_2"] > 0
    assert set(result["ratios"]) == {"c_ccdm_freeinit_1", "c_ccdm_freeinit_2"}
    assert (tmp_path / "out" / "freeinit_sweep.md").exists()
