"""Reproducible weight files: the canonical safetensors writer and `python -m train.mini ship`."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ccdm_core import CCDMError, load_motion_module, new_motion_module, save_motion_module
from ccdm_core.assets import MINI_CHECKPOINT
from ccdm_core.hashing import file_sha256
from ccdm_core.sd.loader import build_default_model, load_sd_checkpoint, save_sd_checkpoint
from ccdm_core.tensorfile import read_tensors, write_safetensors
from conftest import randomize_
from train.mini.ship import MOTION, ship

ROOT = Path(__file__).resolve().parents[1]


def _all_dtypes():
    g = torch.Generator().manual_seed(0)
    return {"f32": torch.randn(2, 5, generator=g), "f16": torch.randn(3, generator=g).half(),
            "bf16": torch.randn(3, generator=g).bfloat16(), "f64": torch.tensor(2.5, dtype=torch.float64),
            "i8": torch.arange(7, dtype=torch.int8), "i64": torch.arange(3), "u8": torch.arange(5, dtype=torch.uint8),
            "flag": torch.tensor([True, False]), "empty": torch.zeros(0, 4),
            "transposed": torch.randn(4, 3, generator=g).t()}


def test_written_files_load_in_safetensors_with_every_dtype(tmp_path):
    tensors = _all_dtypes()
    write_safetensors(tensors, tmp_path / "a.safetensors", {"k": "v"})
    loaded = load_file(str(tmp_path / "a.safetensors"))
    assert loaded.keys() == tensors.keys()
    for key, value in tensors.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
    assert read_tensors(tmp_path / "a.safetensors")[1] == {"k": "v"}


def test_same_weights_same_bytes_whatever_the_order(tmp_path):
    tensors = _all_dtypes()
    meta = {f"ccdm.{c}": c * 3 for c in "zyxabc"}
    write_safetensors(tensors, tmp_path / "a.safetensors", meta)
    write_safetensors(dict(reversed(list(tensors.items()))), tmp_path / "b.safetensors",
                      dict(reversed(list(meta.items()))))
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    tensors["f32"] = tensors["f32"].clone()
    tensors["f32"][0, 0] += 1e-6
    write_safetensors(tensors, tmp_path / "c.safetensors", meta)
    assert file_sha256(tmp_path / "c.safetensors") != file_sha256(tmp_path / "a.safetensors")


def test_same_bytes_in_separate_processes(tmp_path):
    """The safetensors package's own writer orders metadata differently per process; this one does not."""
    code = ("import sys, torch; from ccdm_core.tensorfile import write_safetensors; "
            "write_safetensors({'w': torch.arange(6.).reshape(2, 3), 'b': torch.ones(2).half()}, sys.argv[1], "
            "{k: k.upper() for k in 'qwertyuiop'})")
    for name in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{name}.safetensors")], check=True, cwd=ROOT)
    assert len({(tmp_path / f"{n}.safetensors").read_bytes() for n in "abc"}) == 1


def test_bad_tensors_and_metadata_are_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(CCDMError, match="complex64.*accepted"):
        write_safetensors({"z": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "z.safetensors")
    with pytest.raises(CCDMError, match="strings to strings"):
        write_safetensors({"a": torch.zeros(2)}, tmp_path / "m.safetensors", {"n": 3})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ ship


def _stage_outputs(root: Path, tiny_unet) -> dict:
    """A base stage folder, two exported motion modules and a classifier file, as the stages write them."""
    run = root / "run"
    save_sd_checkpoint(build_default_model(seed=1), run / "ccdm-mini.safetensors")
    motions = {}
    for i, schedule in enumerate(MOTION):
        module = randomize_(new_motion_module(tiny_unet), seed=i).requires_grad_(False)
        config = {"base": str(run / "ccdm-mini.safetensors"), "data": str(root / "clips"),
                  "out": str(root / f"run-{schedule}"), "beta_schedule": schedule, "steps": 3}
        motions[schedule] = root / f"mm-{schedule}.safetensors"
        save_motion_module(module, motions[schedule], {"ccdm.base_model_sha256": "0" * 64,
                                                        "ccdm.train_config": config, "ccdm.train_step": "3"})
    classifier = root / "cls.safetensors"
    write_safetensors({"w": torch.randn(4, 4)}, classifier, {"ccdm.subjects": "a,b"})
    return {"run": run, "motions": motions, "classifier": classifier}


def test_ship_writes_portable_fp16_files_bound_to_the_base(tmp_path, tiny_unet):
    inputs = _stage_outputs(tmp_path / "here", tiny_unet)
    sums = ship(inputs["run"], inputs["motions"], inputs["classifier"], tmp_path / "out")
    out = tmp_path / "out"
    # the base: fp16 weights equal to the fp32 run's rounded, a yaml naming its tokenizer folder relatively
    base = load_sd_checkpoint(out / "ccdm-mini.safetensors", dtype=torch.float16)
    run = load_sd_checkpoint(inputs["run"] / "ccdm-mini.safetensors")
    a, b = base.unet.state_dict(), run.unet.state_dict()
    assert all(torch.equal(a[k], b[k].half()) for k in a)
    assert "version: ccdm-mini.clip\n" in (out / "ccdm-mini.yaml").read_text()
    assert str(tmp_path) not in (out / "ccdm-mini.yaml").read_text()
    # the motion modules: fp16 values of the exported ones, the shipped base's hash, no folder paths
    for schedule, name in MOTION.items():
        tensors, meta = read_tensors(out / name)
        exported, _ = read_tensors(inputs["motions"][schedule])
        assert all(t.dtype == torch.float16 and torch.equal(t, exported[k].half()) for k, t in tensors.items())
        assert meta["ccdm.base_model_sha256"] == file_sha256(out / "ccdm-mini.safetensors")
        config = json.loads(meta["ccdm.train_config"])
        assert config["base"] == "ccdm-mini.safetensors" and config["out"] == f"run-{schedule}"
        assert str(tmp_path) not in meta["ccdm.train_config"] and meta["ccdm.train_step"] == "3"
        assert load_motion_module(out / name).info.sha256 == sums[name]  # it loads as a motion module
    lines = (out / "SHA256SUMS").read_text().splitlines()
    assert sorted(lines) == sorted(f"{sha}  {name}" for name, sha in sums.items()) and len(lines) == 4
    for name, sha in sums.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == sha


def test_ship_gives_the_same_bytes_wherever_the_stages_ran(tmp_path, tiny_unet):
    first = _stage_outputs(tmp_path / "one", tiny_unet)
    second = tmp_path / "two" / "elsewhere"
    shutil.copytree(tmp_path / "one", second)
    moved = {"run": second / "run", "classifier": second / "cls.safetensors",
             "motions": {s: second / f"mm-{s}.safetensors" for s in MOTION}}
    for schedule, path in moved["motions"].items():  # what the run in the other folder would have recorded
        tensors, meta = read_tensors(path)
        config = json.loads(meta["ccdm.train_config"])
        config.update(base=str(moved["run"] / "ccdm-mini.safetensors"), out=str(second / f"run-{schedule}"))
        meta["ccdm.train_config"] = json.dumps(config)
        write_safetensors(tensors, path, meta)
    sums = [ship(i["run"], i["motions"], i["classifier"], tmp_path / f"out{n}") for n, i in enumerate([first, moved])]
    assert sums[0] == sums[1]


def test_ship_names_missing_inputs(tmp_path, tiny_unet):
    inputs = _stage_outputs(tmp_path, tiny_unet)
    inputs["motions"]["linear"].unlink()
    with pytest.raises(CCDMError, match="missing: .*mm-linear"):
        ship(inputs["run"], inputs["motions"], inputs["classifier"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_ship_cli_requires_every_input(tmp_path):
    result = subprocess.run([sys.executable, "-m", "train.mini", "ship", "--out", str(tmp_path), "--run", "x"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "--linear, --scaled-linear, --classifier" in result.stderr


def test_the_shipped_files_match_their_sums():
    folder = Path(MINI_CHECKPOINT).parent
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        sha, name = line.split("  ")
        assert file_sha256(folder / name) == sha, name
        tensors, meta = read_tensors(folder / name)
        if "motion" in name:
            assert meta["ccdm.base_model_sha256"] == file_sha256(MINI_CHECKPOINT)
