"""`ccdm generate --motion-lora PATH[@STRENGTH]` and `ccdm inspect` on a motion LoRA, with the shipped ccdm-mini
model and module."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ccdm_core.assets import MINI_MOTION_DEFAULT, shipped
from ccdm_core.cli import main
from ccdm_core.tensorfile import write_safetensors
from ccdm_core.video import read_infotext, read_video
from conftest import make_unet, randomize_
from test_motion_lora import lora_state

FAST = ["--prompt", "a flower", "--frames", "4", "--steps", "2", "--seed", "3", "--quiet"]
pytestmark = pytest.mark.skipif(shipped(MINI_MOTION_DEFAULT) is None, reason="needs the shipped ccdm-mini module")


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory):
    from ccdm_core.motion_io import load_motion_module

    module = load_motion_module(shipped(MINI_MOTION_DEFAULT))
    path = tmp_path_factory.mktemp("lora") / "v2_lora_PanLeft.safetensors"
    write_safetensors({k: v * 0.5 for k, v in lora_state(module, rank=4).items()}, path, {})
    return path


def test_a_motion_lora_changes_the_clip_and_strength_0_does_not(tmp_path, capsys, lora_file):
    clips = {}
    for name, extra in (("plain", []), ("lora", ["--motion-lora", f"{lora_file}@0.8"]),
                        ("zero", ["--motion-lora", f"{lora_file}@0"])):
        code, out, err = run_cli(capsys, "generate", *FAST, *extra, "--out", str(tmp_path / f"{name}.png"))
        assert code == 0, err
        clips[name] = read_video(tmp_path / f"{name}.png")[0]
    assert np.array_equal(clips["plain"], clips["zero"]) and not np.array_equal(clips["plain"], clips["lora"])
    info = read_infotext(tmp_path / "lora.png")
    assert 'CCDM motion LoRAs: "v2_lora_PanLeft [' in info and ']:0.8"' in info  # quoted: it holds ':'


def test_a_kohya_layout_lora_changes_the_clip_as_its_animatediff_twin(tmp_path, capsys):
    from ccdm_core.motion_io import load_motion_module

    module = load_motion_module(shipped(MINI_MOTION_DEFAULT))
    clips = {}
    for layout in ("animatediff", "kohya"):
        path = tmp_path / f"{layout}.safetensors"
        state = lora_state(module, rank=4, layout=layout, alpha=4.0 if layout == "kohya" else None)
        write_safetensors({k: v * 0.5 if v.dim() else v for k, v in state.items()}, path, {})
        code, _, err = run_cli(capsys, "generate", *FAST, "--motion-lora", str(path), "--out",
                               str(tmp_path / f"{layout}.png"))
        assert code == 0, err
        clips[layout] = read_video(tmp_path / f"{layout}.png")[0]
    assert np.array_equal(clips["animatediff"], clips["kohya"])  # alpha = rank: the same merge


def test_inspect_reports_a_motion_lora(capsys, lora_file):
    code, out, err = run_cli(capsys, "inspect", str(lora_file))
    assert code == 0, err
    info = json.loads(out)
    assert info["format"] == "motion-lora" and info["rank"] == 4 and info["layout"] == "animatediff"
    assert info["blocks"] == ["down_blocks.0"] and len(info["sha256"]) == 64


def test_a_lora_for_another_module_exits_2_and_writes_nothing(tmp_path, capsys):
    other = randomize_(__import__("ccdm_core").new_motion_module(make_unet(model_channels=64), "animatediff-v2"), 1)
    path = tmp_path / "wide.safetensors"
    write_safetensors(lora_state(other), path, {})
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, err = run_cli(capsys, "generate", *FAST, "--motion-lora", str(path), "--out", str(out_dir / "c.gif"))
    assert code == 2 and "does not fit this motion module" in err and list(out_dir.iterdir()) == []
    code, _, err = run_cli(capsys, "generate", *FAST, "--motion-lora", f"{path}@x", "--out", str(out_dir / "c.gif"))
    assert code == 2 and "strength 'x' is not a number" in err


def test_camera_guidance_yields_to_a_lora_that_makes_the_prompts_move(tmp_path, capsys, lora_file):
    prompt = ["--prompt", "a flower, camera pans left"]
    runs = {}
    for name, extra in (("guided", []), ("lora", ["--motion-lora", str(lora_file)]),
                        ("lora 0.4", ["--motion-lora", str(lora_file), "--camera-strength-with-lora", "0.4"])):
        code, out, err = run_cli(capsys, "generate", *FAST, *prompt, *extra, "--out", str(tmp_path / f"{name}.png"))
        assert code == 0, err
        runs[name] = read_infotext(tmp_path / f"{name}.png")
    assert "CCDM camera: pan left 1" in runs["guided"] and "CCDM camera from LoRA" not in runs["guided"]
    assert "CCDM camera:" not in runs["lora"] and "CCDM camera from LoRA: v2_lora_PanLeft" in runs["lora"]
    assert "CCDM camera: pan left 0.4" in runs["lora 0.4"]
    code, _, err = run_cli(capsys, "generate", *FAST, "--camera-strength-with-lora", "3", "--out",
                           str(tmp_path / "bad.png"))
    assert code == 2 and "--camera-strength-with-lora must be a number in 0..1" in err
    assert not (tmp_path / "bad.png").exists()


def test_an_animatelcm_module_samples_with_lcm_unless_told_otherwise(tmp_path, capsys):
    from safetensors.torch import save_file

    from ccdm_core.motion_io import load_motion_module

    module = load_motion_module(shipped(MINI_MOTION_DEFAULT))  # ccdm-mini's widths, written as AnimateLCM ships
    state = {k: v.contiguous() for k, v in module.state_dict().items() if not k.endswith("pos_encoder.pe")}
    path = tmp_path / "mm_mini_lcm.safetensors"
    save_file(state, str(path))
    code, _, err = run_cli(capsys, "generate", *FAST, "--motion", str(path), "--out", str(tmp_path / "lcm.png"))
    assert code == 0, err
    assert "animatelcm modules are meant for the lcm sampler" in err
    assert "Sampler: LCM" in read_infotext(tmp_path / "lcm.png")
    code, _, err = run_cli(capsys, "generate", *FAST, "--motion", str(path), "--sampler", "euler", "--out",
                           str(tmp_path / "euler.png"))
    assert code == 0 and "meant for" not in err and "Sampler: Euler" in read_infotext(tmp_path / "euler.png")
