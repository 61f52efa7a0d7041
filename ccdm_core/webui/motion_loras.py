"""Motion LoRAs in the WebUI: found in models/ccdm/lora, --ccdm-motion-lora-dir and the WebUI's models/Lora (files
there that are motion LoRAs), named by the run's `motion_loras` setting or by `<lora:NAME:W>` tags in the prompt,
checked against the loaded motion module before anything runs, merged into it only while p.sample runs (the cached
module is put back by identity). A tag that names a motion LoRA is taken out of the prompts the WebUI's extra
networks parse (its Lora extension would fail on the keys); other `<lora:...>` tags are left to the WebUI."""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import CCDMError
from ..motion_lora import MotionLora, check_fit, check_strength, is_motion_lora_file, load_motion_lora, lora_for_move
from .settings import CCDMSettingsError

EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth")
FIELD = "motion_loras"
KEY_CAMERA_LORA = "CCDM camera from LoRA"  # the motion LoRA that made the prompt's camera move (guidance yielded)
KEY_TAGS = "CCDM motion LoRA tags"  # the prompt's motion LoRA tags, with hashes (paste: the prompt carries them)
# the WebUI's extra-network syntax (modules/extra_networks.py): <lora:NAME:TE[:UNET]> or named te=/unet= values
TAG = re.compile(r"<lora:([^:>]+)((?::[^:>]*)*)>")


def lora_folders() -> List[str]:
    """models/ccdm/lora, --ccdm-motion-lora-dir, then the WebUI's models/Lora."""
    from modules import paths_internal, shared

    folders = [os.path.join(paths_internal.models_path, "ccdm", "lora")]
    extra = getattr(shared.cmd_opts, "ccdm_motion_lora_dir", None)
    if extra:
        folders.append(extra)
    folders.append(os.path.join(paths_internal.models_path, "Lora"))
    return folders


def find_lora(name: str, folders: Sequence[str]) -> Path:
    """The file whose stem is `name` in the first folder that has one (find_lora_path), else a 422 listing them."""
    path = find_lora_path(name, folders)
    if path is not None:
        return path
    listed = lora_names(folders)
    raise CCDMSettingsError(FIELD, f"no motion LoRA {name!r} in {', '.join(folders)}; accepted: "
                            f"{', '.join(listed) or '(none found)'}")


def lora_names(folders: Sequence[str]) -> List[str]:
    """The motion LoRAs found (file stems; in the WebUI's models/Lora only motion LoRA files), sorted."""
    names = set()
    for folder in folders:
        if os.path.isdir(folder):
            names.update(f.stem for f in Path(folder).iterdir() if f.suffix in EXTENSIONS)
    return sorted(name for name in names if find_lora_path(name, folders) is not None)


def prepare_loras(settings, module) -> List[Tuple[MotionLora, float]]:
    """Load the run's motion LoRAs and check each against the motion module (refused by name, nothing changed)."""
    if not settings.motion_loras:
        return []
    folders = lora_folders()
    loras = []
    for name, strength in settings.motion_loras:
        try:
            lora = load_motion_lora(find_lora(name, folders))
            check_fit(module, lora)
        except CCDMSettingsError:
            raise
        except CCDMError as err:
            raise CCDMSettingsError(FIELD, str(err)) from None
        loras.append((lora, strength))
    return loras


def find_lora_path(name: str, folders: Sequence[str]) -> Optional[Path]:
    """The motion LoRA file called `name`: any file of that stem in the motion-LoRA folders, and in the WebUI's
    models/Lora (the last folder) only a file whose keys are a motion LoRA's."""
    for index, folder in enumerate(folders):
        for ext in EXTENSIONS:
            path = Path(folder) / f"{name}{ext}"
            if path.is_file() and (index < len(folders) - 1 or is_motion_lora_file(path)):
                return path
    return None


def tag_strength(args: str) -> float:
    """The strength of a tag's `:TE[:UNET]` or `te=`/`unet=` values (the UNet's when given; 1 when none)."""
    positional, named = [], {}
    for part in [a.strip() for a in args.split(":")[1:] if a.strip()]:
        key, eq, value = part.partition("=")
        if eq:
            named[key.strip()] = value
        else:
            positional.append(part)
    text = named.get("unet") or (positional[1] if len(positional) > 1 else None) or named.get("te") or \
        (positional[0] if positional else "1")
    try:
        return float(text)
    except ValueError:
        raise CCDMSettingsError("prompt", f"cannot read the strength {text!r} of a <lora:...> tag; expected a "
                                "number such as <lora:v2_lora_ZoomIn:0.8>") from None


def prompt_tags(prompts: Sequence[str], folders: Sequence[str]) -> Dict[str, float]:
    """{name: strength} of the `<lora:NAME:W>` tags that name a motion LoRA; one strength per name."""
    found: Dict[str, float] = {}
    for text in prompts:
        for match in TAG.finditer(text if isinstance(text, str) else ""):
            name = match.group(1).strip()
            if find_lora_path(name, folders) is None:
                continue  # an image LoRA (or unknown): the WebUI's
            try:
                strength = check_strength(tag_strength(match.group(2)), name)
            except CCDMSettingsError:
                raise
            except CCDMError as err:
                raise CCDMSettingsError("prompt", f"<lora:{name}>: {err}") from None
            if found.get(name, strength) != strength:
                raise CCDMSettingsError("prompt", f"motion LoRA {name!r} is tagged with strengths {found[name]:g} "
                                        f"and {strength:g}; accepted: one strength per motion LoRA")
            found[name] = strength
    return found


def strip_tags(text: str, names) -> str:
    """`text` without the `<lora:NAME...>` tags of `names` (the others stay as they are)."""
    return TAG.sub(lambda m: "" if m.group(1).strip() in names else m.group(0), text)


def hide_tags(p, names) -> None:
    """Before the WebUI parses this run's extra networks, take the motion LoRA tags out of the prompts it parses
    (`p.prompts`, `p.hr_prompts`); `p.all_prompts` (the infotext's prompt) keeps them."""
    if not names:
        return
    original = p.parse_extra_network_prompts

    def parse_extra_network_prompts():
        for attr in ("prompts", "hr_prompts"):
            value = getattr(p, attr, None)
            if isinstance(value, list):
                setattr(p, attr, [strip_tags(t, names) if isinstance(t, str) else t for t in value])
        return original()

    p.parse_extra_network_prompts = parse_extra_network_prompts


def run_prompts(p) -> List[str]:
    """Every prompt of the run (styles applied when the WebUI has set them up), the hires prompt included."""
    prompts = getattr(p, "all_prompts", None) or getattr(p, "prompt", None) or []
    prompts = list(prompts) if isinstance(prompts, (list, tuple)) else [prompts]
    hires = getattr(p, "all_hr_prompts", None) or getattr(p, "hr_prompt", None) or []
    return prompts + (list(hires) if isinstance(hires, (list, tuple)) else [hires])


def prepare_prompt_loras(p, settings, module) -> List[Tuple[MotionLora, float]]:
    """The prompt's motion LoRA tags, loaded, checked against the module and hidden from the WebUI's Lora
    extension; a LoRA both tagged and in `motion_loras` is refused (which strength would be meant?)."""
    prompts = run_prompts(p)
    if not any(isinstance(text, str) and "<lora:" in text for text in prompts):
        return []
    folders = lora_folders()
    tags = prompt_tags(prompts, folders)
    both = sorted(set(tags) & {name for name, _ in settings.motion_loras})
    if both:
        raise CCDMSettingsError(FIELD, f"motion LoRA {both[0]!r} is both a <lora:...> tag in the prompt and in "
                                "motion_loras; accepted: one of them")
    loras = []
    for name, strength in tags.items():
        try:
            lora = load_motion_lora(find_lora_path(name, folders))
            check_fit(module, lora)
        except CCDMError as err:
            raise CCDMSettingsError("prompt", f"<lora:{name}>: {err}") from None
        loras.append((lora, strength))
    hide_tags(p, set(tags))
    return loras


def camera_with_loras(settings, loras, prompt: str):
    """(settings, LoRA name): when an applied motion LoRA makes the camera move the run would guide (`v2_lora_ZoomIn`
    and "camera zooms in"), camera guidance is turned down to the setting "Camera strength when a motion LoRA makes
    the move" (0, off, by default) so the two do not fight; else the settings as they are and None."""
    from . import env

    name = lora_for_move(settings.camera_move(prompt), loras)
    if name is None:
        return settings, None
    strength = min(settings.camera_strength, float(env.opt("ccdm_camera_strength_with_lora")))
    return dataclasses.replace(settings, camera_strength=strength), name
