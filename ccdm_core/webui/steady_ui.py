"""The FreeInit and frame-interpolation controls of the txt2vid tab and the CCDM accordion, and their paste."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import gradio as gr

from ..freeinit import FREEINIT_FILTERS, FREEINIT_NOISE, ITERATIONS_RANGE
from ..interpolate import INTERPOLATE_RANGE
from .settings import FREEINIT_FIELDS, CCDMSettings, CCDMSettingsError, steadier_from_infotext

STEADY_FIELDS = ("interpolate",) + tuple(f"freeinit_{name}" for name in FREEINIT_FIELDS)


def steady_controls(elem_prefix: str, defaults: CCDMSettings) -> Dict[str, Any]:
    """Interpolation (a phase after sampling) and FreeInit (more sampling passes), keyed by settings field."""
    c: Dict[str, Any] = {}
    c["interpolate"] = gr.Slider(minimum=INTERPOLATE_RANGE[0], maximum=INTERPOLATE_RANGE[1], step=1,
                                 value=defaults.interpolate, label="Interpolate (output frames per generated frame; "
                                 "1 = off; the clip plays at fps x this)", elem_id=f"{elem_prefix}_interpolate")
    with gr.Accordion("FreeInit (steadier clips, one more sampling pass each)", open=False,
                      elem_id=f"{elem_prefix}_freeinit"):
        with gr.Row():
            c["freeinit_iterations"] = gr.Slider(minimum=ITERATIONS_RANGE[0], maximum=ITERATIONS_RANGE[1], step=1,
                                                 value=defaults.freeinit_iterations,
                                                 label="FreeInit iterations (1 = off)",
                                                 elem_id=f"{elem_prefix}_freeinit_iterations")
            c["freeinit_filter"] = gr.Dropdown(choices=list(FREEINIT_FILTERS), value=defaults.freeinit_filter,
                                               label="Filter", elem_id=f"{elem_prefix}_freeinit_filter")
            c["freeinit_noise"] = gr.Radio(choices=list(FREEINIT_NOISE), value=defaults.freeinit_noise,
                                           label="High frequencies from", elem_id=f"{elem_prefix}_freeinit_noise")
        with gr.Row():
            c["freeinit_spatial"] = gr.Slider(minimum=0.05, maximum=1.0, step=0.05, value=defaults.freeinit_spatial,
                                              label="Spatial stop frequency", elem_id=f"{elem_prefix}_freeinit_spatial")
            c["freeinit_temporal"] = gr.Slider(minimum=0.05, maximum=1.0, step=0.05,
                                               value=defaults.freeinit_temporal, label="Temporal stop frequency",
                                               elem_id=f"{elem_prefix}_freeinit_temporal")
    return c


def steady_values(values: Dict[str, Any]) -> Dict[str, Any]:
    """Typed values of these controls (integers from gradio's floats)."""
    out = {k: v for k, v in values.items() if k in STEADY_FIELDS}
    for name in ("interpolate", "freeinit_iterations"):
        if isinstance(out.get(name), float) and out[name].is_integer():
            out[name] = int(out[name])
    for name in ("freeinit_spatial", "freeinit_temporal"):
        if isinstance(out.get(name), int) and not isinstance(out[name], bool):
            out[name] = float(out[name])
    return out


def _pasted(field: str):
    """Reader of one field from the infotext: off when a CCDM infotext lacks the entry, left when it is unreadable
    or the infotext has no CCDM entries."""
    def read(params: Dict[str, str]):
        if "CCDM frames" not in params and "CCDM motion module" not in params:
            return gr.update()
        try:
            values = steadier_from_infotext(params)
        except CCDMSettingsError:
            return gr.update()
        return values.get(field, gr.update())
    return read


def steady_infotext_fields(c: Dict[str, Any]) -> List[Tuple[Any, Any]]:
    return [(c[name], _pasted(name)) for name in STEADY_FIELDS if name in c]
