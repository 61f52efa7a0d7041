"""Notes printed when a run's motion module is meant for other settings than those picked (it runs anyway): an
AnimateLCM module with a sampler other than LCM, a HotShot-XL module with windows longer than the 8 frames it was
trained on."""
from __future__ import annotations

from .lcm_sampler import ALIASES, HINT, SAMPLER_NAME

HOTSHOT_CONTEXT = 8  # HotShot-XL was trained on 8-frame clips


def sampler_note(p, module) -> None:
    """A module meant for the LCM sampler (AnimateLCM) runs with the sampler picked, with a note saying so."""
    wanted = getattr(module.info, "recommended_sampler", None)
    picked = str(getattr(p, "sampler_name", ""))
    if wanted == "lcm" and picked != SAMPLER_NAME and picked.lower() not in ALIASES:
        print(f"CCDM: {module.info.format} modules are meant for the LCM sampler ({HINT.split(': ', 1)[1]}); "
              f"running with {picked}")


def context_note(module, settings) -> None:
    """HotShot-XL with context windows longer than its training clips: a note recommending 8."""
    length = min(settings.context_length, settings.frames)
    if module.info.format == "hotshot-xl" and length > HOTSHOT_CONTEXT:
        print(f"CCDM: HotShot-XL was trained on {HOTSHOT_CONTEXT}-frame clips; context length {HOTSHOT_CONTEXT} is "
              f"recommended (running with {length})")


def module_notes(p, module, settings) -> None:
    sampler_note(p, module)
    context_note(module, settings)
