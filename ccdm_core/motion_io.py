"""Loading, recognising, saving and inspecting motion checkpoints (CCDM, AnimateDiff v1/v2/v3, AnimateLCM for SD1.x;
AnimateDiff-SDXL and HotShot-XL for SDXL).

How a file's format is recognised (first rule that applies):

1. `ccdm.format` metadata "ccdm-motion": CCDM (its schedule and limits are read from the metadata; the model family
   from `ccdm.base`, else from the layout: 3 down blocks and no mid block is SDXL).
2. SDXL (3 down and 3 up blocks, 2 and 3 layers each, no mid block; any widths): HotShot-XL when its key names
   (`temporal_attentions`) or tables (`pos_encoder.positional_encoding`) are used, the tables have 24 positions, or
   there are none and the file name contains "hotshot"/"hsxl"; else AnimateDiff-SDXL. Limits, schedules and
   GroupNorms: `motion_sdxl`'s docstring. HotShot-XL key names are accepted for this layout only.
3. AnimateLCM (`AnimateLCM_sd15_t2v.ckpt` of wangfuyun/AnimateLCM and re-saves of it): the AnimateDiff key layout
   (it is AnimateDiff v2's architecture, mid block included), told apart by any one of
   a. a mid block and no `pos_encoder` key at all: the released file carries no position tables, while every
      AnimateDiff v1/v2/v3 release does. This is the rule of ComfyUI-AnimateDiff-Evolved (no key containing
      "pos_encoder") and of sd-webui-animatediff 2.0.1-a (`mid_block` and no key containing "pe");
   b. position tables named `pos_encoder.pos_encoding` (the buffer name in AnimateLCM's own model code);
   c. a file name containing "animatelcm" (any case), for copies that kept or added `pos_encoder.pe` tables.
   Frame positions: the length of the file's table when it has one, else 64 (AnimateLCM's code fixes 64).
   Schedule: linear betas 0.00085..0.012 (its inference config, as AnimateDiff's); GroupNorm per frame;
   `recommended_sampler` "lcm" (it is a consistency-distilled module: 4-8 steps, CFG 1-2).
4. AnimateDiff: a mid block is v2; 24 positions (or no table and a name `mm_sd_v14`/`mm_sd_v15`) is v1; else v3.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from .errors import CCDMError
from .hashing import file_sha256, shorthash
from .motion import HEADS, LAYOUT_MAX_FRAMES, MotionInfo, MotionModule, MotionShape
from .motion_sdxl import (HOTSHOT_TABLE, check_sdxl_shape, hotshot_key, is_sdxl_shape, sdxl_format, sdxl_info,
                          split_hotshot_key)
from .tensorfile import read_tensors, write_safetensors

CCDM_FORMAT = "ccdm-motion"
SCHEMA = "1"
_SLOT_KEY = re.compile(r"^(down_blocks\.\d+|mid_block|up_blocks\.\d+)\.motion_modules\.(\d+)\.temporal_transformer\.(.+)$")
_LAYER_KEY = re.compile(r"^transformer_blocks\.(\d+)\.")
ANIMATELCM_MAX_FRAMES = 64  # AnimateLCM's PositionalEncoding has a fixed max_length of 64
ANIMATELCM_SAMPLER = "lcm"
_LCM_TABLE = "pos_encoder.pos_encoding"  # AnimateLCM's own name for the `pos_encoder.pe` buffer
_SD1 = "CCDM, AnimateDiff v1/v2/v3 or AnimateLCM motion modules for SD1.x"
ACCEPTED = f"{_SD1}; AnimateDiff-SDXL or HotShot-XL motion modules for SDXL"


def _split_keys(state: Dict[str, torch.Tensor], name: str = "state dict"):
    """Motion keys by slot (AnimateDiff's slot names, HotShot-XL's translated), fusion extras, anything else, and
    whether HotShot-XL's key names were used."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    slots: Dict[str, Dict[str, torch.Tensor]] = {}
    extras, other, styles = {}, [], set()
    for key, value in state.items():
        m, hotshot = _SLOT_KEY.match(key), split_hotshot_key(key)
        if m:
            slots.setdefault(f"{m.group(1)}.motion_modules.{m.group(2)}", {})[m.group(3)] = value
            styles.add("motion_modules")
        elif hotshot:
            slots.setdefault(hotshot[0], {})[hotshot[1]] = value
            styles.add("temporal_attentions")
        elif key.startswith("fusion."):
            extras[key] = value
        else:
            other.append(key)
    if len(styles) > 1:
        raise CCDMError(f"{name}: mixes AnimateDiff (`motion_modules`) and HotShot-XL (`temporal_attentions`) key "
                        f"names; accepted: one of them")
    return slots, extras, other, styles == {"temporal_attentions"}


def _refusal(name: str, state: Dict[str, torch.Tensor]) -> CCDMError:
    keys = sorted(state)
    if any(k.startswith("model.diffusion_model.") for k in keys):
        what = "a Stable Diffusion checkpoint (model.diffusion_model.*), not a motion module"
    elif any("lora" in k.lower() for k in keys):
        what = "LoRA weights (e.g. a motion LoRA or the v3 adapter), not a motion module"
    elif any("temporal" in k for k in keys):
        what = f"temporal layers under unknown key names (first keys: {', '.join(keys[:3])})"
    else:
        what = f"no motion-module weights (first keys: {', '.join(keys[:3])})"
    return CCDMError(f"{name}: found {what}; accepted: {ACCEPTED}")


def _shape_from(slots: Dict[str, Dict[str, torch.Tensor]], heads: int, name: str) -> MotionShape:
    channels = {}
    layers = set()
    for slot, tensors in slots.items():
        if "proj_in.weight" not in tensors:
            raise CCDMError(f"{name}: {slot} has no proj_in.weight; the file is incomplete")
        channels[slot] = int(tensors["proj_in.weight"].shape[1])
        layers.add(1 + max((int(m.group(1)) for k in tensors for m in [_LAYER_KEY.match(k)] if m), default=-1))
    if len(layers) != 1 or 0 in layers:
        raise CCDMError(f"{name}: inconsistent transformer depth across slots {sorted(layers)}")
    down, up = _levels(channels, "down_blocks"), _levels(channels, "up_blocks")
    if not down or not up:
        raise CCDMError(f"{name}: motion module without down or up blocks; the file is incomplete")
    shape = MotionShape(down=down, mid=channels.get("mid_block.motion_modules.0"), up=up,
                        layers=layers.pop(), heads=heads)
    if len(down) == 3 or len(up) == 3:
        check_sdxl_shape(shape, name)
    return shape


def _levels(channels: Dict[str, int], prefix: str) -> tuple:
    levels: Dict[int, Dict[int, int]] = {}
    for slot, ch in channels.items():
        parts = slot.split(".")
        if parts[0] == prefix:
            levels.setdefault(int(parts[1]), {})[int(parts[3])] = ch
    if sorted(levels) != list(range(len(levels))):
        raise CCDMError(f"{prefix} indices {sorted(levels)} are not contiguous; the file is incomplete")
    return tuple(tuple(block[j] for j in sorted(block)) for _, block in sorted(levels.items()))


def _pe_length(slots: Dict[str, Dict[str, torch.Tensor]]) -> Optional[int]:
    for tensors in slots.values():
        for key, value in tensors.items():
            if key.endswith("pos_encoder.pe"):
                return int(value.shape[1])
    return None


def _rename_tables(slots: Dict[str, Dict[str, torch.Tensor]], table: str) -> bool:
    """Rename position tables called `table` (AnimateLCM's or HotShot-XL's name) to `pos_encoder.pe`; whether there
    were any."""
    found = False
    for tensors in slots.values():
        for key in [k for k in tensors if k.endswith(table)]:
            tensors[key[: -len(table)] + "pos_encoder.pe"] = tensors.pop(key)
            found = True
    return found


def is_animatelcm(slots: Dict[str, Dict[str, torch.Tensor]], name: str = "", lcm_tables: bool = False) -> bool:
    """Rule 3 of the module docstring, on keys grouped by slot (after `_rename_tables`)."""
    has_mid = any(slot.startswith("mid_block.") for slot in slots)
    has_positions = any("pos_encoder" in key for tensors in slots.values() for key in tensors)
    return (has_mid and not has_positions) or lcm_tables or "animatelcm" in Path(name).name.lower()


def _info_from(metadata: Dict[str, str], shape: MotionShape, pe_len: Optional[int], name: str,
               animatelcm: bool = False, hotshot: bool = False) -> MotionInfo:
    if metadata.get("ccdm.format") == CCDM_FORMAT:
        return _ccdm_info(metadata, shape, pe_len, name)
    if is_sdxl_shape(shape):
        return sdxl_info(sdxl_format(hotshot, pe_len, name), pe_len, metadata)
    if hotshot:
        raise CCDMError(f"{name}: HotShot-XL key names (`temporal_attentions`) on a module with {len(shape.down)} "
                        f"down blocks; accepted: HotShot-XL's SDXL layout (3 down blocks, no mid block)")
    if animatelcm:
        return MotionInfo(format="animatelcm", max_frames=pe_len or ANIMATELCM_MAX_FRAMES, beta_schedule="linear",
                          groupnorm_over_frames=False, recommended_sampler=ANIMATELCM_SAMPLER,
                          metadata=dict(metadata))
    if shape.mid is not None:
        fmt = "animatediff-v2"
    elif pe_len == 24 or (pe_len is None and re.search(r"mm_sd_v1[45](\.|$)", name)):
        fmt = "animatediff-v1"
    else:
        fmt = "animatediff-v3"
    max_frames = pe_len or LAYOUT_MAX_FRAMES[fmt]
    return MotionInfo(format=fmt, max_frames=max_frames, beta_schedule="linear",
                      groupnorm_over_frames=fmt == "animatediff-v1", metadata=dict(metadata))


def _ccdm_info(metadata: Dict[str, str], shape: MotionShape, pe_len: Optional[int], name: str) -> MotionInfo:
    base = metadata.get("ccdm.base") or ("sdxl" if is_sdxl_shape(shape) else "sd1")
    try:
        frames = metadata.get("ccdm.frames") or None
        return MotionInfo(
            format="ccdm",
            max_frames=int(metadata.get("ccdm.max_frames") or pe_len or 32),
            beta_schedule=metadata.get("ccdm.beta_schedule", "linear"),
            beta_start=float(metadata.get("ccdm.beta_start", 0.00085)),
            beta_end=float(metadata.get("ccdm.beta_end", 0.012)),
            groupnorm_over_frames=metadata.get("ccdm.groupnorm_over_frames", "false") == "true",
            train_frames=int(frames) if frames else None,
            metadata=dict(metadata),
            base=base,
            temporal_norm_over_frames=metadata.get("ccdm.temporal_norm_over_frames", "false") == "true",
        )
    except ValueError as err:
        raise CCDMError(f"{name}: malformed ccdm metadata ({err})") from err


def _copy_tensors(module: torch.nn.Module, flat: Dict[str, torch.Tensor], name: str):
    """Copy tensors into the module's parameters and buffers by name: (missing, unexpected). Not through
    `load_state_dict`, which the WebUI replaces for every module while it loads a checkpoint (it then returns None)."""
    own = dict(module.named_parameters())
    own.update(module.named_buffers())
    with torch.no_grad():
        for key, value in flat.items():
            if key in own:
                if tuple(own[key].shape) != tuple(value.shape):
                    raise CCDMError(f"{name}: {key} has shape {tuple(value.shape)}, the layout needs "
                                    f"{tuple(own[key].shape)}")
                own[key].copy_(value)
    return [k for k in own if k not in flat], [k for k in flat if k not in own]


def motion_module_from_state_dict(state: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None,
                                  name: str = "state dict") -> MotionModule:
    """Recognise the format of a motion state dict and load it strictly into a `MotionModule`."""
    metadata = dict(metadata or {})
    slots, extras, other, hotshot_names = _split_keys(state, name)
    if not slots:
        raise _refusal(name, state)
    if other:
        what = " (an AnimateLCM-I2V image encoder, not supported)" if any(
            k.startswith("img_encoder.") for k in other) else ""
        raise CCDMError(f"{name}: unexpected keys beside the motion module{what}: {', '.join(sorted(other)[:3])}")
    heads = int(metadata.get("ccdm.heads", HEADS))
    lcm_tables = _rename_tables(slots, _LCM_TABLE)
    hotshot = _rename_tables(slots, HOTSHOT_TABLE) or hotshot_names
    shape = _shape_from(slots, heads, name)
    info = _info_from(metadata, shape, _pe_length(slots), name, is_animatelcm(slots, name, lcm_tables), hotshot)
    module = MotionModule(shape, info)
    flat = {f"{slot}.temporal_transformer.{k}": v for slot, tensors in slots.items() for k, v in tensors.items()}
    missing, unexpected = _copy_tensors(module, flat, name)
    missing = [k for k in missing if not k.endswith("pos_encoder.pe")]  # pe is recomputed
    if missing or unexpected:
        bad = [hotshot_key(k) if hotshot_names else k for k in (missing or unexpected)[:3]]
        raise CCDMError(f"{name}: keys do not match the {info.format} layout ({'missing' if missing else 'unexpected'}:"
                        f" {', '.join(bad)})")
    module.extras = extras  # e.g. trained fusion projections, used by the fusion module when present
    return module


def load_motion_module(path: str | os.PathLike, device=None, dtype=None) -> MotionModule:
    """Load a CCDM, AnimateDiff v1/v2/v3, AnimateLCM, AnimateDiff-SDXL or HotShot-XL motion module from
    `.safetensors` / `.ckpt` / `.pth` / `.pt` (the file name takes part in recognising AnimateLCM and, without
    position tables, HotShot-XL: see the module docstring)."""
    path = Path(path)
    state, metadata = read_tensors(path)
    module = motion_module_from_state_dict(state, metadata, path.name)
    module.info = dataclasses.replace(module.info, sha256=file_sha256(path))
    module.requires_grad_(False).eval()
    if device is not None or dtype is not None:
        module.to(device=device, dtype=dtype)
    return module


def motion_metadata(module: MotionModule, extra: Optional[Dict[str, object]] = None) -> Dict[str, str]:
    """The safetensors metadata of DESIGN.md for a module (all values strings)."""
    info = module.info
    meta = {
        "ccdm.format": CCDM_FORMAT, "ccdm.schema": SCHEMA,
        "ccdm.beta_schedule": info.beta_schedule, "ccdm.beta_start": repr(info.beta_start),
        "ccdm.beta_end": repr(info.beta_end), "ccdm.frames": str(info.train_frames or ""),
        "ccdm.max_frames": str(info.max_frames), "ccdm.heads": str(module.shape.heads),
        "ccdm.groupnorm_over_frames": "true" if info.groupnorm_over_frames else "false",
        "ccdm.base_model_sha256": info.metadata.get("ccdm.base_model_sha256", ""),
        "ccdm.train_config": info.metadata.get("ccdm.train_config", "{}"),
    }
    if info.base != "sd1" or info.temporal_norm_over_frames:  # absent for SD1.x modules, whose files stay as they were
        meta["ccdm.base"] = info.base
        meta["ccdm.temporal_norm_over_frames"] = "true" if info.temporal_norm_over_frames else "false"
    for key, value in (extra or {}).items():
        if not isinstance(key, str):
            raise CCDMError(f"metadata key {key!r} is not a string")
        meta[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return meta


def save_motion_module(module: MotionModule, path: str | os.PathLike,
                       metadata: Optional[Dict[str, object]] = None) -> str:
    """Write the module (and its fusion extras) as safetensors with CCDM metadata; return the file's sha256."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise CCDMError(f"{path.name}: motion modules are saved as .safetensors only")
    tensors = {k: v for k, v in module.state_dict().items()}
    tensors.update(getattr(module, "extras", {}) or {})
    write_safetensors(tensors, path, motion_metadata(module, metadata))
    return file_sha256(path)


def inspect_motion_file(path: str | os.PathLike) -> Dict[str, object]:
    """What `ccdm inspect` prints for a motion checkpoint or a motion LoRA."""
    state, _ = read_tensors(Path(path)) if Path(path).is_file() else ({}, {})
    if state and all("lora" in k.lower() or k.endswith(".alpha") for k in state):
        from .motion_lora import describe_motion_lora, load_motion_lora

        return describe_motion_lora(load_motion_lora(path), path)
    module = load_motion_module(path)
    info = module.info
    return {
        "path": str(path), "format": info.format, "sha256": info.sha256, "shorthash": shorthash(info.sha256),
        "channels": module.down_channels(), "modules": len(module.slots()), "mid_block": module.shape.mid is not None,
        "layers": module.shape.layers, "heads": module.shape.heads, "max_frames": info.max_frames,
        "beta_schedule": info.beta_schedule, "beta_start": info.beta_start, "beta_end": info.beta_end,
        "groupnorm_over_frames": info.groupnorm_over_frames, "recommended_sampler": info.recommended_sampler,
        "base": info.base, "train_frames": info.train_frames,
        "temporal_norm_over_frames": info.temporal_norm_over_frames,
        "parameters": sum(p.numel() for p in module.parameters()), "metadata": info.metadata,
    }


def describe(module: MotionModule) -> Tuple[str, str]:
    """(format, shorthash or '') for messages and infotext."""
    return module.info.format, module.info.shorthash or ""
