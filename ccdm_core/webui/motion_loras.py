"""Motion LoRAs in the WebUI: found in models/ccdm/lora, --ccdm-motion-lora-dir and the WebUI's models/Lora (files
there that are motion LoRAs), named by the run's `motion_loras` setting, checked against the loaded motion module
before anything runs, merged into it only while p.sample runs (the cached module is put back by identity)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence, Tuple

from ..errors import CCDMError
from ..motion_lora import MotionLora, check_fit, load_motion_lora
from .settings import CCDMSettingsError

EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth")
FIELD = "motion_loras"


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
    """The file whose stem is `name` in the first folder that has one."""
    for folder in folders:
        for ext in EXTENSIONS:
            path = Path(folder) / f"{name}{ext}"
            if path.is_file():
                return path
    listed = sorted({p.stem for f in folders if os.path.isdir(f) for p in Path(f).iterdir()
                     if p.suffix in EXTENSIONS})
    raise CCDMSettingsError(FIELD, f"no motion LoRA {name!r} in {', '.join(folders)}; accepted: "
                            f"{', '.join(listed) or '(none found)'}")


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
