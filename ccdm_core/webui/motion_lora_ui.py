"""Motion LoRA controls of the txt2vid tab and the CCDM accordion (a multi-select of the LoRAs found, with one
strength each), their refresh, their paste from `CCDM motion LoRAs: NAME [hash]:S, ...`, and the LCM hint."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import gradio as gr

from .lcm_sampler import sampler_hint
from .settings import CCDMSettings, CCDMSettingsError, motion_loras_from_infotext

LORA_FIELDS = ("motion_lora_names", "motion_lora_strengths")
KEY_LORAS = "CCDM motion LoRAs"
REFRESH_SYMBOL = "\U0001f504"


def available_loras() -> List[str]:
    from .motion_loras import lora_folders, lora_names

    return lora_names(lora_folders())


def _strength_text(strengths: Sequence[float]) -> str:
    return ", ".join(f"{s:g}" for s in strengths)


def motion_lora_controls(elem_prefix: str, defaults: CCDMSettings) -> Dict[str, Any]:
    """The LoRAs to merge into the motion module and their strengths (in the order picked), keyed by field."""
    c: Dict[str, Any] = {}
    names = [n for n, _ in defaults.motion_loras]
    with gr.Row():
        c["motion_lora_names"] = gr.Dropdown(label="Motion LoRAs (or <lora:NAME:W> in the prompt)",
                                             choices=sorted(set(available_loras()) | set(names)), value=names,
                                             multiselect=True, elem_id=f"{elem_prefix}_motion_lora_names", scale=4)
        c["motion_lora_strengths"] = gr.Textbox(label="Strengths (one per LoRA, -2..2; empty: 1)",
                                                value=_strength_text(s for _, s in defaults.motion_loras),
                                                elem_id=f"{elem_prefix}_motion_lora_strengths", scale=2)
        refresh = gr.Button(value=REFRESH_SYMBOL, elem_id=f"{elem_prefix}_motion_lora_refresh",
                            elem_classes=["tool"], scale=1, min_width=40)

    def on_refresh(current):
        return gr.update(choices=sorted(set(available_loras()) | set(current or [])))

    refresh.click(fn=on_refresh, inputs=[c["motion_lora_names"]], outputs=[c["motion_lora_names"]],
                  show_progress=False)
    return c


def _strengths(text: Any, count: int) -> List[Any]:
    """One strength per picked LoRA from "0.8, 1" (missing ones are 1; an unreadable one stays text so the
    settings name it)."""
    parts = [x.strip() for x in str(text or "").split(",") if x.strip()]
    if len(parts) > count:
        raise CCDMSettingsError("motion_loras", f"{len(parts)} strengths for {count} motion LoRAs; accepted: one "
                                "per LoRA, in the order picked")
    values: List[Any] = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            values.append(part)
    return values + [1.0] * (count - len(values))


def lora_values(values: Dict[str, Any]) -> Dict[str, Any]:
    """The controls' values as the `motion_loras` settings field (the two control keys are taken out)."""
    if not any(name in values for name in LORA_FIELDS):
        return {}
    names = [n for n in (values.pop("motion_lora_names", None) or []) if n]
    strengths = _strengths(values.pop("motion_lora_strengths", ""), len(names))
    return {"motion_loras": [{"name": n, "strength": s} for n, s in zip(names, strengths)]}


def lora_control_values(loras: Sequence[Tuple[str, float]]) -> Dict[str, Any]:
    """The two controls' values for a settings object's `motion_loras`."""
    return {"motion_lora_names": [n for n, _ in loras], "motion_lora_strengths": _strength_text(s for _, s in loras)}


def _pasted(field: str):
    """Reader of one control from `CCDM motion LoRAs`: none when a CCDM infotext lacks the entry; left when it is
    unreadable or the infotext has no CCDM entries."""
    def read(params: Dict[str, str]):
        if "CCDM frames" not in params and "CCDM motion module" not in params:
            return gr.update()
        try:
            return lora_control_values(motion_loras_from_infotext(params))[field]
        except CCDMSettingsError:
            return gr.update()
    return read


def lora_infotext_fields(c: Dict[str, Any]) -> List[Tuple[Any, Any]]:
    return [(c[name], _pasted(name)) for name in LORA_FIELDS if name in c]


def lcm_hint(sampler_dropdown) -> gr.HTML:
    """A line under the sampler dropdown while LCM is picked (recommended steps and CFG)."""
    def text(name):
        hint = sampler_hint(name)
        return gr.update(value=f"<p class='ccdm-hint'>{hint}</p>" if hint else "", visible=bool(hint))

    html = gr.HTML(visible=False, elem_id=f"{sampler_dropdown.elem_id}_hint")
    sampler_dropdown.change(fn=text, inputs=[sampler_dropdown], outputs=[html], show_progress=False)
    return html
