"""Motion LoRAs (AnimateDiff v2's camera moves and community ones) merged into a motion module for one run.

Layouts read: AnimateDiff's original (diffusers attention processors:
`<block>.motion_modules.N.temporal_transformer.transformer_blocks.0.attention_blocks.K.processor.to_q_lora.down.weight`
and `.up.weight`, for to_q/to_k/to_v/to_out) and the kohya-style conversion used by A1111's Lora tooling
(`lora_unet_<block>_motion_modules_N_..._attention_blocks_K_to_q.lora_down.weight`, `.lora_up.weight`, `.alpha`).
The delta of each target weight is `strength * alpha / rank * up @ down` (alpha = rank when the file has none).
Merging is a patch like the others: the module's original tensors are put back by identity, never subtracted.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from .errors import CCDMError

STRENGTH_RANGE = (-2.0, 2.0)
CAMERA_WITH_LORA = 0.0  # camera-guidance strength when a motion LoRA makes the move the prompt names
# AnimateDiff v2's MotionLoRA names (v2_lora_ZoomIn, ..., RollingAnticlockwise), letters only, -> camera.py's moves;
# the counter-clockwise spellings first: "anticlockwise" contains "clockwise"
_LORA_MOVES = (("zoomin", "zoom in"), ("zoomout", "zoom out"), ("panleft", "pan left"), ("panright", "pan right"),
               ("tiltup", "tilt up"), ("tiltdown", "tilt down"), ("rollinganticlockwise", "rotate counterclockwise"),
               ("rollingcounterclockwise", "rotate counterclockwise"),
               ("rotatecounterclockwise", "rotate counterclockwise"), ("rollingclockwise", "rotate clockwise"),
               ("rotateclockwise", "rotate clockwise"))
_ORIGINAL = re.compile(r"^(?P<base>.+\.attention_blocks\.\d+)\.processor\.to_(?P<proj>q|k|v|out)_lora\."
                       r"(?P<part>down|up)\.weight$")
_KOHYA = re.compile(r"^lora_unet_(?P<base>.+_attention_blocks_\d+)_to_(?P<proj>q|k|v|out(?:_0)?)\."
                    r"(?P<part>lora_down|lora_up|alpha)(?:\.weight)?$")


@dataclasses.dataclass(frozen=True)
class LoraPair:
    """One target weight's low-rank update: `up @ down` scaled by alpha / rank."""

    target: str  # the motion module's parameter name, e.g. `...attention_blocks.0.to_q.weight`
    down: torch.Tensor  # [rank, in]
    up: torch.Tensor  # [out, rank]
    alpha: Optional[float] = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def delta(self, strength: float) -> torch.Tensor:
        scale = (self.alpha / self.rank) if self.alpha is not None else 1.0
        return (self.up.float() @ self.down.float()) * (strength * scale)


@dataclasses.dataclass(frozen=True)
class MotionLora:
    name: str
    pairs: Tuple[LoraPair, ...]
    layout: str  # "animatediff" | "kohya"
    sha256: Optional[str] = None

    @property
    def rank(self) -> int:
        return max(p.rank for p in self.pairs)


def _target(base: str, proj: str, kohya: bool) -> str:
    proj = "out.0" if proj.startswith("out") else proj
    return f"{base}.to_{proj}.weight" if not kohya else f"{base}\0{proj}"


def _collect(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, dict], str]:
    """Grouped pieces per target and the layout; keys of neither layout are an error."""
    groups: Dict[str, dict] = {}
    layouts = set()
    for key, value in state.items():
        m = _ORIGINAL.match(key)
        kohya = m is None
        m = m or _KOHYA.match(key)
        if m is None:
            raise CCDMError(f"unexpected key {key!r}: not a motion LoRA key (accepted: AnimateDiff's "
                            "'...attention_blocks.K.processor.to_q_lora.down.weight' or kohya 'lora_unet_..._to_q."
                            "lora_down.weight')")
        layouts.add("kohya" if kohya else "animatediff")
        part = m.group("part").replace("lora_", "")
        groups.setdefault(_target(m.group("base"), m.group("proj"), kohya), {})[part] = value
    if len(layouts) != 1:
        raise CCDMError("a motion LoRA mixes AnimateDiff and kohya key layouts; accepted: one of them")
    return groups, layouts.pop()


def is_motion_lora_keys(keys) -> bool:
    """Whether every key is a motion LoRA key (of one of the two layouts): tells a motion LoRA among image LoRAs."""
    keys = list(keys)
    return bool(keys) and all(_ORIGINAL.match(k) or _KOHYA.match(k) for k in keys)


def is_motion_lora_file(path) -> bool:
    """A file's keys are a motion LoRA's (a .safetensors header is read without its tensors)."""
    from .tensorfile import read_tensors

    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as fh:
                return is_motion_lora_keys(fh.keys())
        return is_motion_lora_keys(read_tensors(path)[0])
    except Exception:  # unreadable: not a motion LoRA (the WebUI's own Lora extension reports it)
        return False


def motion_lora_from_state_dict(state: Dict[str, torch.Tensor], name: str = "motion LoRA",
                                sha256: Optional[str] = None) -> MotionLora:
    """Recognise a motion LoRA's layout and pair its down/up matrices per target."""
    try:
        groups, layout = _collect(state)
    except CCDMError as err:
        raise CCDMError(f"{name}: {err}") from None
    pairs = []
    for target, parts in sorted(groups.items()):
        if "down" not in parts or "up" not in parts:
            raise CCDMError(f"{name}: {target.replace(chr(0), '_')} has no {'up' if 'down' in parts else 'down'} "
                            "matrix")
        down, up = parts["down"], parts["up"]
        if down.dim() != 2 or up.dim() != 2 or up.shape[1] != down.shape[0]:
            raise CCDMError(f"{name}: {target.replace(chr(0), '_')}: up {tuple(up.shape)} and down "
                            f"{tuple(down.shape)} are not a rank-r pair")
        alpha = float(parts["alpha"]) if "alpha" in parts else None
        pairs.append(LoraPair(target, down, up, alpha))
    if not pairs:
        raise CCDMError(f"{name}: no motion LoRA weights")
    return MotionLora(name, tuple(pairs), layout, sha256)


def load_motion_lora(path) -> MotionLora:
    """A motion LoRA file (.safetensors, or .ckpt/.pt through the safe loader)."""
    from .hashing import file_sha256
    from .tensorfile import read_tensors

    path = Path(path)
    state, _ = read_tensors(path)
    return motion_lora_from_state_dict(state, path.stem, file_sha256(path))


def describe_motion_lora(lora: MotionLora, path) -> Dict[str, object]:
    """What `ccdm inspect` prints for a motion LoRA: format, rank, layout, targeted blocks, sha256."""
    blocks = sorted({p.target.split(".motion_modules")[0].split("_motion_modules")[0] for p in lora.pairs})
    return {"path": str(path), "format": "motion-lora", "layout": lora.layout, "rank": lora.rank,
            "targets": len(lora.pairs), "blocks": [b.replace("lora_unet_", "") for b in blocks],
            "sha256": lora.sha256, "shorthash": (lora.sha256 or "")[:10] or None}


def lora_label(loras: Sequence[Tuple[MotionLora, float]]) -> str:
    """The infotext entry `name [shorthash]:strength, ...` of the LoRAs a run merged."""
    return ", ".join(f"{lora.name} [{(lora.sha256 or 'unsaved')[:10]}]:{strength:g}" for lora, strength in loras)


def _resolve(module: torch.nn.Module, lora: MotionLora) -> List[Tuple[torch.nn.Parameter, LoraPair]]:
    """Each pair's parameter in the module (kohya names matched through underscores); refused if any misses."""
    params = dict(module.named_parameters())
    by_kohya = {name[: -len(".weight")].replace(".", "_"): name for name in params if name.endswith(".weight")}
    out = []
    for pair in lora.pairs:
        name = pair.target
        if "\0" in name:
            base, proj = name.split("\0")
            name = by_kohya.get(f"{base}_to_{proj.replace('.', '_')}", name)
        param = params.get(name)
        if param is None:
            raise CCDMError(f"motion LoRA {lora.name!r} does not fit this motion module: it has no "
                            f"{name.replace(chr(0), '_')} (a LoRA for another module layout, e.g. v1/v3 or SDXL)")
        if tuple(param.shape) != (pair.up.shape[0], pair.down.shape[1]):
            raise CCDMError(f"motion LoRA {lora.name!r} does not fit this motion module: {name} is "
                            f"{tuple(param.shape)}, the LoRA gives {(pair.up.shape[0], pair.down.shape[1])} "
                            "(another width)")
        out.append((param, pair))
    return out


def check_fit(module: torch.nn.Module, lora: MotionLora) -> None:
    """Refuse a LoRA that does not fit the module (by name), without changing anything."""
    _resolve(module, lora)


def check_strength(strength, name: str) -> float:
    ok = not isinstance(strength, bool) and isinstance(strength, (int, float))
    if not ok or not STRENGTH_RANGE[0] <= strength <= STRENGTH_RANGE[1]:
        raise CCDMError(f"motion LoRA {name!r} strength must be a number in {STRENGTH_RANGE[0]:g}.."
                        f"{STRENGTH_RANGE[1]:g}, got {strength!r}")
    return float(strength)


@contextlib.contextmanager
def merged_motion_loras(module: torch.nn.Module, loras: Sequence[Tuple[MotionLora, float]]) -> Iterator[int]:
    """Inside the block the module's targeted weights are `W + sum(delta)`; after it, whatever happens, each
    parameter holds its original tensor object again (bit-exact). Everything is checked before anything changes;
    strength 0 changes nothing. Yields the number of weights changed."""
    # 1. Check every LoRA against the module; sum the deltas per parameter (several LoRAs add).
    deltas: Dict[int, Tuple[torch.nn.Parameter, torch.Tensor]] = {}
    for lora, strength in loras:
        strength = check_strength(strength, lora.name)
        for param, pair in _resolve(module, lora):
            if strength == 0.0:
                continue
            previous = deltas.get(id(param), (param, 0.0))[1]
            deltas[id(param)] = (param, previous + pair.delta(strength).to(param.device))
    # 2. Swap in merged tensors; the originals come back by identity.
    originals = [(param, param.data) for param, _ in deltas.values()]
    try:
        with torch.no_grad():
            for param, delta in deltas.values():
                param.data = (param.data.float() + delta).to(param.dtype)
        yield len(deltas)
    finally:
        for param, original in originals:
            param.data = original


def lora_camera_move(name: str) -> Optional[str]:
    """The camera move a motion LoRA's name says it makes (`v2_lora_ZoomIn` -> "zoom in"), or None."""
    letters = re.sub(r"[^a-z]", "", (name or "").lower())
    return next((move for key, move in _LORA_MOVES if key in letters), None)


def lora_for_move(move: Optional[str], loras: Sequence[Tuple[MotionLora, float]]) -> Optional[str]:
    """The name of the first applied (strength != 0) motion LoRA that makes `move`, or None."""
    if move is None:
        return None
    return next((lora.name for lora, strength in loras if strength != 0 and lora_camera_move(lora.name) == move),
                None)
