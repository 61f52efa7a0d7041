"""Where temporal layers go in an ldm UNet: after each ResBlock(+SpatialTransformer) pair, before upsamplers.

The same walk serves SDXL's UNet (the WebUI's `sgm` UNetModel: 3 levels, 9 input and 9 output blocks, no attention
at the first level, a `y` vector input): input blocks 1-2, 4-5, 7-8 give down_blocks.0-2 (2 each), output blocks
0-8 give up_blocks.0-2 (3 each, before the Upsample of blocks 2 and 5); SDXL modules have no mid slot."""
from __future__ import annotations

import dataclasses
from typing import Dict, List

from torch import nn

from .errors import CCDMError
from .motion import (HEADS, LAYOUT_MAX_FRAMES, LAYOUTS, MotionInfo, MotionModule, MotionShape, check_base,
                     zero_output_)


@dataclasses.dataclass(frozen=True)
class Slot:
    """One insertion point: the block container, the index the layer is inserted at, and its width."""

    name: str  # e.g. "down_blocks.1.motion_modules.0"
    container: nn.Sequential
    index: int
    channels: int
    where: str  # e.g. "input_blocks.4", for messages


def _kind(layer: nn.Module) -> str:
    return type(layer).__name__


def _is_sdxl(unet: nn.Module) -> bool:
    """SDXL's UNet (sgm: a `y` vector through `label_emb`), or an SDXL-structure ldm UNet: 3 levels (2
    downsamplers) and a label-embedding input, as the tests build one."""
    if getattr(unet, "adm_in_channels", None) is not None or getattr(unet, "num_classes", None) == "sequential":
        return True
    downsamplers = sum(1 for block in getattr(unet, "input_blocks", []) if _kind(block[0]) == "Downsample")
    return getattr(unet, "num_classes", None) is not None and downsamplers == 2


def unet_base(unet: nn.Module) -> str:
    """"sdxl" or "sd1": the model family of an ldm/sgm UNet."""
    return "sdxl" if _is_sdxl(unet) else "sd1"


def _input_slots(unet: nn.Module) -> List[Slot]:
    slots, level, j = [], 0, 0
    for i, block in enumerate(unet.input_blocks):
        kinds = [_kind(layer) for layer in block]
        if kinds and kinds[0] == "Downsample":
            level, j = level + 1, 0
        elif kinds and kinds[0] == "ResBlock":
            slots.append(Slot(f"down_blocks.{level}.motion_modules.{j}", block, len(block),
                              block[0].out_channels, f"input_blocks.{i}"))
            j += 1
    return slots


def _output_slots(unet: nn.Module) -> List[Slot]:
    slots, level, j = [], 0, 0
    for i, block in enumerate(unet.output_blocks):
        kinds = [_kind(layer) for layer in block]
        if not kinds or kinds[0] != "ResBlock":
            continue
        upsampled = kinds[-1] == "Upsample"
        index = len(block) - 1 if upsampled else len(block)
        slots.append(Slot(f"up_blocks.{level}.motion_modules.{j}", block, index,
                          block[0].out_channels, f"output_blocks.{i}"))
        j += 1
        if upsampled:
            level, j = level + 1, 0
    return slots


def _middle_slot(unet: nn.Module) -> Slot:
    block = unet.middle_block
    kinds = [_kind(layer) for layer in block]
    if kinds[:1] != ["ResBlock"] or kinds[-1:] != ["ResBlock"] or len(kinds) < 2:
        raise CCDMError(f"unexpected UNet middle block {kinds}; an SD1 UNet has [ResBlock, SpatialTransformer, ResBlock]")
    return Slot("mid_block.motion_modules.0", block, len(block) - 1, block[0].out_channels, "middle_block")


def unet_slots(unet: nn.Module) -> Dict[str, Slot]:
    """Every insertion point of an SD1.x or SDXL ldm/sgm UNet, by motion-module slot name."""
    for attr in ("input_blocks", "middle_block", "output_blocks"):
        if not hasattr(unet, attr):
            raise CCDMError(f"the model has no {attr}: not an ldm UNetModel (expected an SD1.x or SDXL UNet)")
    mid = [] if _is_sdxl(unet) else [_middle_slot(unet)]
    slots = _input_slots(unet) + mid + _output_slots(unet)
    return {slot.name: slot for slot in slots}


def check_fit(unet: nn.Module, module: MotionModule) -> Dict[str, Slot]:
    """Check the module fits the UNet (model family by name, then block count and widths); return its slots."""
    check_base(module.info, unet_base(unet), "this UNet")
    slots = unet_slots(unet)
    wanted = module.shape.slot_channels()
    missing = sorted(set(wanted) - set(slots))
    if missing:
        down = [s.channels for n, s in slots.items() if n.endswith("motion_modules.0") and n.startswith("down")]
        raise CCDMError(f"motion module does not fit this UNet: it has {len(module.shape.down)} down blocks with "
                        f"channels {module.down_channels()}, the UNet has {len(down)} levels with channels {down} "
                        f"(no place for {missing[0]})")
    for name, channels in wanted.items():
        if slots[name].channels != channels:
            raise CCDMError(f"motion module does not fit this UNet: {name} has {channels} channels but the UNet's "
                            f"{slots[name].where} has {slots[name].channels} (module made for another base width; "
                            f"module down channels {module.down_channels()})")
    return {name: slots[name] for name in wanted}


def new_motion_module(unet: nn.Module, layout: str = "animatediff-v2", max_frames: int = 32,
                      layers: int = 1, heads: int = HEADS) -> MotionModule:
    """A fresh module shaped for `unet`, output projections zeroed so it is the identity (SD1.x layouts on an SD1.x
    UNet, `animatediff-sdxl` / `hotshot-xl` on an SDXL one)."""
    from .motion_sdxl import SDXL_FORMATS, sdxl_info

    accepted = LAYOUTS + ("ccdm",) + SDXL_FORMATS
    if layout not in accepted:
        raise CCDMError(f"unknown layout {layout!r}; accepted: {', '.join(accepted)}")
    if not 1 <= int(max_frames) <= 1024:
        raise CCDMError(f"max_frames {max_frames} out of range; accepted 1..1024")
    if (layout in SDXL_FORMATS) != _is_sdxl(unet):
        raise CCDMError(f"layout {layout!r} does not fit this {'SDXL' if _is_sdxl(unet) else 'SD1.x'} UNet; accepted "
                        f"here: {', '.join(SDXL_FORMATS if _is_sdxl(unet) else LAYOUTS + ('ccdm',))}")
    slots = unet_slots(unet)
    down = _group(slots, "down_blocks")
    up = _group(slots, "up_blocks")
    with_mid = layout in ("animatediff-v2", "ccdm")
    mid = slots["mid_block.motion_modules.0"].channels if with_mid else None
    fmt = "ccdm" if layout == "ccdm" else layout
    if layout in SDXL_FORMATS:
        info = sdxl_info(layout, int(max_frames), {})
    else:
        info = MotionInfo(format=fmt, max_frames=int(max_frames), groupnorm_over_frames=layout == "animatediff-v1")
    shape = MotionShape(down=down, mid=mid, up=up, layers=layers, heads=heads)
    return zero_output_(MotionModule(shape, info))


def _group(slots: Dict[str, Slot], prefix: str) -> tuple:
    levels: Dict[int, List[int]] = {}
    for name, slot in slots.items():
        if name.startswith(prefix + "."):
            level, j = int(name.split(".")[1]), int(name.split(".")[3])
            levels.setdefault(level, []).append((j, slot.channels))
    return tuple(tuple(ch for _, ch in sorted(levels[i])) for i in sorted(levels))


__all__ = ["Slot", "unet_slots", "unet_base", "check_fit", "new_motion_module", "LAYOUT_MAX_FRAMES"]
