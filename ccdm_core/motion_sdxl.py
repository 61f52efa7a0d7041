"""SDXL motion modules: AnimateDiff-SDXL (guoyww/AnimateDiff, branch sdxl) and HotShot-XL (hotshotco/Hotshot-XL).

Both are AnimateDiff's temporal transformer (GroupNorm, proj_in, one block of two temporal self-attentions with
sinusoidal frame positions and a GEGLU feed-forward, proj_out; 8 heads) at SDXL's three UNet levels (320/640/1280):
two layers per down level, three per up level and none in the mid block, 15 in all.

- AnimateDiff-SDXL (`mm_sdxl_v10_beta.ckpt`): AnimateDiff's key names with 32-position `pos_encoder.pe` tables;
  trained on 16 frames with scaled-linear betas 0.00085..0.020 (diffusers' "scaled_linear", which ldm and ComfyUI
  call "linear"). Each temporal layer's own GroupNorm spans all frames of a video (its input is `b c f h w`); the
  UNet's norms run per frame.
- HotShot-XL (`hsxl_temporal_layers.safetensors`): `<block>.temporal_attentions.N.<layer>` (no `temporal_transformer`
  level) and tables named `pos_encoder.positional_encoding`, 24 positions; trained on 8 frames with SDXL's own
  schedule (scaled-linear 0.00085..0.012). The UNet's ResBlock and output GroupNorms ran over all frames (as in
  AnimateDiff v1), each temporal layer's GroupNorm per frame. sd-webui-animatediff's re-save of it uses AnimateDiff's
  names with 24-position `pe` tables.

HotShot-XL's names map one to one onto AnimateDiff's, so both load into the engine's `MotionModule`;
`hotshot_state_dict` gives a loaded module's tensors back under HotShot-XL's names.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from .errors import CCDMError
from .motion import MotionInfo, MotionModule, MotionShape

ANIMATEDIFF_SDXL = "animatediff-sdxl"
HOTSHOT_XL = "hotshot-xl"
SDXL_FORMATS = (ANIMATEDIFF_SDXL, HOTSHOT_XL)
HOTSHOT_TABLE = "pos_encoder.positional_encoding"  # HotShot-XL's name for AnimateDiff's `pos_encoder.pe`
_HOTSHOT_KEY = re.compile(r"^(down_blocks\.\d+|mid_block|up_blocks\.\d+)\.temporal_attentions\.(\d+)\.(.+)$")
_ANIMATEDIFF_KEY = re.compile(r"^(down_blocks\.\d+|mid_block|up_blocks\.\d+)\.motion_modules\.(\d+)\."
                              r"temporal_transformer\.(.+)$")
_HOTSHOT_NAME = re.compile(r"hotshot|hsxl", re.IGNORECASE)

# Per format: (frame positions, training frames, beta schedule, beta_start, beta_end, UNet GroupNorms over frames,
# temporal layers' GroupNorm over frames).
_FACTS = {
    ANIMATEDIFF_SDXL: (32, 16, "scaled_linear", 0.00085, 0.020, False, True),
    HOTSHOT_XL: (24, 8, "scaled_linear", 0.00085, 0.012, True, False),
}


def split_hotshot_key(key: str) -> Optional[Tuple[str, str]]:
    """(`down_blocks.1.motion_modules.0`, layer key with AnimateDiff's table name) for a HotShot-XL key, else None."""
    m = _HOTSHOT_KEY.match(key)
    if not m:
        return None
    rest = m.group(3)
    if rest.endswith(HOTSHOT_TABLE):
        rest = rest[: -len(HOTSHOT_TABLE)] + "pos_encoder.pe"
    return f"{m.group(1)}.motion_modules.{m.group(2)}", rest


def hotshot_key(key: str) -> str:
    """A `MotionModule` state-dict key under HotShot-XL's name (the inverse of `split_hotshot_key`)."""
    m = _ANIMATEDIFF_KEY.match(key)
    if not m:
        raise CCDMError(f"{key!r} is not a temporal-layer key; accepted: "
                        f"<block>.motion_modules.N.temporal_transformer.<layer key>")
    rest = m.group(3)
    if rest.endswith("pos_encoder.pe"):
        rest = rest[: -len("pos_encoder.pe")] + HOTSHOT_TABLE
    return f"{m.group(1)}.temporal_attentions.{m.group(2)}.{rest}"


def hotshot_state_dict(module: MotionModule) -> Dict[str, torch.Tensor]:
    """The module's tensors keyed as in HotShot-XL's `hsxl_temporal_layers.safetensors`."""
    return {hotshot_key(k): v for k, v in module.state_dict().items()}


def is_sdxl_shape(shape: MotionShape) -> bool:
    """SDXL's layout: 3 down and 3 up levels and no mid block (widths are not checked: they follow the UNet)."""
    return len(shape.down) == 3 and len(shape.up) == 3 and shape.mid is None


def check_sdxl_shape(shape: MotionShape, name: str) -> None:
    """Refuse 3-level modules that are not SDXL's layout, naming what differs."""
    if len(shape.down) != len(shape.up):
        raise CCDMError(f"{name}: {len(shape.down)} down blocks but {len(shape.up)} up blocks; accepted: 4 and 4 "
                        f"(SD1.x) or 3 and 3 (SDXL)")
    if shape.mid is not None:
        raise CCDMError(f"{name}: 3 down blocks (SDXL) and a mid block, a layout no SDXL motion module has; "
                        f"accepted for SDXL: AnimateDiff-SDXL or HotShot-XL (no mid block)")
    bad = [block for block in shape.down if len(block) != 2] + [block for block in shape.up if len(block) != 3]
    if bad:
        raise CCDMError(f"{name}: SDXL motion module with {[len(b) for b in shape.down]} layers per down block and "
                        f"{[len(b) for b in shape.up]} per up block; accepted: 2 per down and 3 per up block")


def sdxl_format(hotshot_names: bool, pe_len: Optional[int], name: str) -> str:
    """HotShot-XL by its key or table names, a 24-position table (sd-webui-animatediff's re-save), or, with no
    tables, a file name containing "hotshot" or "hsxl"; else AnimateDiff-SDXL."""
    if hotshot_names or pe_len == 24 or (pe_len is None and _HOTSHOT_NAME.search(Path(name).name)):
        return HOTSHOT_XL
    return ANIMATEDIFF_SDXL


def sdxl_info(fmt: str, pe_len: Optional[int], metadata: Dict[str, str]) -> MotionInfo:
    """The limits and training schedule of an SDXL format (module docstring); positions from the file's tables."""
    if fmt not in _FACTS:
        raise CCDMError(f"unknown SDXL motion format {fmt!r}; accepted: {', '.join(SDXL_FORMATS)}")
    positions, frames, schedule, start, end, unet_norms, layer_norms = _FACTS[fmt]
    return MotionInfo(format=fmt, max_frames=pe_len or positions, beta_schedule=schedule, beta_start=start,
                      beta_end=end, groupnorm_over_frames=unet_norms, train_frames=frames, base="sdxl",
                      temporal_norm_over_frames=layer_norms, metadata=dict(metadata))


__all__ = ["ANIMATEDIFF_SDXL", "HOTSHOT_XL", "SDXL_FORMATS", "check_sdxl_shape", "hotshot_key", "hotshot_state_dict",
           "is_sdxl_shape", "sdxl_format", "sdxl_info", "split_hotshot_key"]
