"""The shipped ccdm-mini model: present, loads as a WebUI-layout SD1 checkpoint, and is the CLI's default."""
from __future__ import annotations

import json

import torch

from ccdm_core.assets import MINI_CHECKPOINT, MINI_MOTION, MINI_MOTION_DEFAULT, shipped
from ccdm_core.hashing import file_sha256
from ccdm_core.cli import main
from ccdm_core.sd.loader import load_sd_checkpoint


def test_shipped_checkpoint_loads_with_its_yaml_and_tokenizer_folder():
    assert shipped(MINI_CHECKPOINT) is not None
    model = load_sd_checkpoint(MINI_CHECKPOINT)
    assert model.unet.model_channels == 32 and model.text_encoder.config.width == 128
    assert 0.1 < model.scale_factor < 10 and len(model.sha256) == 64
    from ccdm_core.sd.tokenizer import CLIPTokenizer

    texts = ["a temple, camera zooms in", "a cup of coffee", "cells under a microscope"]
    assert torch.equal(model.tokenizer.encode(texts), CLIPTokenizer.default().encode(texts))  # CLIP's real vocabulary


def test_cli_defaults_to_the_shipped_model(tmp_path, capsys):
    code = main(["generate", "--prompt", "a flower", "--frames", "2", "--steps", "2", "--seed", "3", "--quiet",
                 "--out", str(tmp_path / "a.gif")])
    line = json.loads(capsys.readouterr().out)
    assert code == 0 and line["frames"] == 2
    from ccdm_core.video import read_infotext

    assert "Model: ccdm-mini" in read_infotext(tmp_path / "a.gif") or "Model hash" in read_infotext(tmp_path / "a.gif")
    if shipped(MINI_MOTION_DEFAULT):  # the scaled-linear module (the base model's own schedule)
        assert line["motion_sha256"] == file_sha256(MINI_MOTION_DEFAULT) != file_sha256(MINI_MOTION)


@torch.no_grad()
def test_text_conditioning_changes_the_prediction():
    model = load_sd_checkpoint(MINI_CHECKPOINT)
    a, b = model.encode_prompts(["a temple"]), model.encode_prompts(["coins"])
    x = torch.randn(1, 4, 8, 8)
    t = torch.tensor([500])
    assert (model.unet(x, t, a) - model.unet(x, t, b)).abs().mean() > 1e-3
