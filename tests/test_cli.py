"""`ccdm` CLI: every output format with the requested frames and fps, infotext, JSON line, exit code 2."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ccdm_core.cli import main
from ccdm_core.video import read_infotext, read_video

FAST = ["--prompt", "a red fox, camera pans left", "--frames", "5", "--fps", "10", "--steps", "2", "--seed", "11",
        "--quiet"]


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt", ["mp4", "gif", "webm", "webp", "png"])
def test_generate_writes_every_format(tmp_path, capsys, fmt):
    out_path = tmp_path / f"clip.{fmt}"
    code, out, err = run_cli(capsys, "generate", *FAST, "--out", str(out_path))
    assert code == 0, err
    line = json.loads(out.strip().splitlines()[-1])
    assert line["path"] == str(out_path.resolve()) and line["frames"] == 5 and line["seed"] == 11
    assert set(line) == {"path", "frames", "fps", "seed", "motion_sha256", "seconds", "report"}
    assert line["report"]["frames"] == 5 and line["report"]["fps"] == 10
    frames, fps = read_video(out_path)
    assert frames.shape[0] == 5 and fps == pytest.approx(10, rel=0.02)
    info = read_infotext(out_path)
    assert "a red fox, camera pans left" in info and "Seed: 11" in info and "Steps: 2" in info
    assert [p.name for p in tmp_path.iterdir()] == [out_path.name]


def test_report_is_ccdm_evaluate_of_the_clip_and_can_be_saved_or_turned_off(tmp_path, capsys):
    out_path = tmp_path / "clip.png"  # lossless: `ccdm evaluate` reads back the frames the report saw
    code, out, err = run_cli(capsys, "generate", *FAST, "--report-json", "--out", str(out_path))
    assert code == 0, err
    report = json.loads(out)["report"]
    code, out, _ = run_cli(capsys, "evaluate", str(out_path))
    evaluated = json.loads(out)
    assert {k: report[k] for k in ("warp_error", "flicker_index", "motion_magnitude_pct", "frames")} == {
        k: evaluated[k] for k in ("warp_error", "flicker_index", "motion_magnitude_pct", "frames")}
    saved = json.loads((tmp_path / "clip.png.report.json").read_text())
    assert len(saved["per_frame"]["warp_error"]) == 4
    code, out, _ = run_cli(capsys, "generate", *FAST, "--no-report", "--out", str(tmp_path / "b.gif"))
    assert code == 0 and "report" not in json.loads(out)


def test_out_without_extension_takes_the_format(tmp_path, capsys):
    code, out, err = run_cli(capsys, "generate", *FAST, "--format", "gif", "--out", str(tmp_path / "clip"))
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["path"] == str((tmp_path / "clip.gif").resolve())
    assert read_video(tmp_path / "clip.gif")[0].shape[0] == 5


def test_motion_module_shorthash_in_json_and_infotext(tmp_path, capsys):
    import torch
    from ccdm_core import new_motion_module, save_motion_module
    from ccdm_core.sd.loader import build_default_model

    module = new_motion_module(build_default_model().unet)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.02)
    sha = save_motion_module(module, tmp_path / "mm.safetensors")
    code, out, err = run_cli(capsys, "generate", *FAST, "--motion", str(tmp_path / "mm.safetensors"),
                             "--out", str(tmp_path / "v.gif"))
    assert code == 0, err
    assert json.loads(out)["motion_sha256"] == sha
    assert f"CCDM motion module: mm [{sha[:10]}]" in read_infotext(tmp_path / "v.gif")
    code, out, _ = run_cli(capsys, "inspect", str(tmp_path / "mm.safetensors"))
    info = json.loads(out)
    assert code == 0 and info["sha256"] == sha and info["format"] == "ccdm" and info["max_frames"] == 32


@pytest.mark.parametrize("extra,words", [
    (["--frames", "0"], "frames must be an integer in 1..1024"),
    (["--width", "70"], "multiple of 8"),
    (["--context-length", "4", "--context-overlap", "4"], "context_overlap"),
    (["--format", "gif"], "has extension .mp4 but --format is gif"),
    (["--model", "missing.safetensors"], "no such file"),
    (["--motion", "missing.ckpt"], "no such file"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, extra, words):
    args = ["generate", *FAST, *extra, "--out", str(tmp_path / "clip.mp4")]
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_inspect_refuses_non_motion_files(tmp_path, capsys):
    from safetensors.torch import save_file
    import torch

    save_file({"model.diffusion_model.x": torch.zeros(1)}, str(tmp_path / "sd.safetensors"))
    code, _, err = run_cli(capsys, "inspect", str(tmp_path / "sd.safetensors"))
    assert code == 2 and "Stable Diffusion checkpoint" in err


def test_module_entry_point_and_bench_line():
    done = subprocess.run([sys.executable, "-m", "ccdm_core", "bench", "motion", "--frames", "2", "--latent", "8",
                           "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)
    assert line["flop_ratio"] > 1.0 and line["median_s_bare"] > 0 and line["time_ratio"] > 0


def test_interpolate_writes_more_frames_at_a_higher_rate(tmp_path, capsys):
    out_path = tmp_path / "clip.gif"
    code, out, err = run_cli(capsys, "generate", *FAST, "--interpolate", "3", "--fps", "24", "--out", str(out_path))
    assert code == 0, err
    frames, fps = read_video(out_path)
    assert frames.shape[0] == (5 - 1) * 3 + 1 and fps == pytest.approx(24, rel=0.05)
    assert "CCDM interpolate: 3" in read_infotext(out_path)
    code, out, err = run_cli(capsys, "interpolate", str(out_path), "--factor", "2", "--out",
                             str(tmp_path / "again.gif"), "--quiet")
    assert code == 0, err
    assert json.loads(out)["frames"] == (13 - 1) * 2 + 1
    assert "CCDM interpolate: 6" in read_infotext(tmp_path / "again.gif")


def test_freeinit_and_bad_interpolate_from_the_cli(tmp_path, capsys):
    code, out, err = run_cli(capsys, "generate", *FAST, "--freeinit-iterations", "2", "--out",
                             str(tmp_path / "fi.gif"))
    assert code == 0, err
    assert "CCDM FreeInit: 2/butterworth/0.25/0.25/fresh" in read_infotext(tmp_path / "fi.gif")
    code, _, err = run_cli(capsys, "generate", *FAST, "--interpolate", "9", "--out", str(tmp_path / "x.gif"))
    assert code == 2 and "--interpolate" in err and not (tmp_path / "x.gif").exists()
