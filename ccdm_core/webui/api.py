"""HTTP routes: `POST /ccdm/v1/txt2vid`, `GET /ccdm/v1/motion-modules` and `GET /ccdm/v1/motion-loras` (added
through `on_app_started`)."""
from __future__ import annotations

import base64
import io
from typing import Any, Dict

from fastapi import Body, FastAPI
from fastapi.exceptions import HTTPException

from ..errors import CCDMError
from . import env
from .reporting import api_report
from .settings import CCDMSettingsError, Txt2VidRequest

TXT2VID_PATH = "/ccdm/v1/txt2vid"
MODULES_PATH = "/ccdm/v1/motion-modules"
LORAS_PATH = "/ccdm/v1/motion-loras"


def _unprocessable(err: CCDMError) -> HTTPException:
    """HTTP 422 whose detail starts with the field name (`frames: 2000 is out of range; ...`)."""
    detail = getattr(err, "detail", None) or str(err)
    return HTTPException(status_code=422, detail=detail)


def _b64_file(path) -> str:
    with open(path, "rb") as fh:
        return base64.b64encode(fh.read()).decode("ascii")


def _b64_png(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def txt2vid_response(request: Txt2VidRequest, result) -> Dict[str, Any]:
    """The route's JSON: the first format's file (base64), frame count, infotext, optional PNG frames."""
    clip = result.clips[0] if result.clips else None
    fmt = request.video.formats[0].value
    path = clip.videos.get(fmt) if clip else None
    body: Dict[str, Any] = {
        "video": _b64_file(path) if path else None, "format": fmt, "frames": len(result.images),
        "info": result.info, "seed": result.seed, "interrupted": result.interrupted,
        "files": [str(p) for p in clip.videos.values()] if clip else [],
        "report": api_report(getattr(result, "report", None), request.report_per_frame),
    }
    if request.return_frames:
        body["images"] = [_b64_png(image) for image in result.images]
    return body


def txt2vid(payload: Dict[str, Any] = Body(...)) -> Dict[str, Any]:
    """Text to video with the loaded checkpoint; runs in the WebUI's queue like its own API calls."""
    from modules import shared
    from modules.call_queue import queue_lock

    from . import runtime

    try:
        request = Txt2VidRequest.from_dict(payload, env.default_settings())
    except CCDMSettingsError as err:
        raise _unprocessable(err) from None
    with queue_lock:
        shared.state.begin(job="ccdm_txt2vid")
        try:
            result = runtime.run_txt2vid(request)
        except CCDMSettingsError as err:
            raise _unprocessable(err) from None
        finally:
            shared.state.end()
    return txt2vid_response(request, result)


def motion_modules() -> Dict[str, Any]:
    """Every motion module found: name, filename, sha256, shorthash, format, the model family it is made for
    (`base`) and whether it fits the loaded checkpoint (`fits`: listed, not hidden, when it does not); the
    checkpoint's family and the folders searched."""
    from modules import shared

    from . import runtime
    from .patches import model_base

    checkpoint = model_base(shared.sd_model) if getattr(shared, "sd_model", None) is not None else None
    entries = runtime.list_modules(refresh=True)
    listed = [{"name": e.name, "label": e.label, "filename": e.filename, "sha256": e.sha256,
               "shorthash": e.shorthash, "format": runtime.module_format(e), "base": runtime.module_family(e),
               "fits": checkpoint is None or runtime.module_family(e) == checkpoint} for e in entries]
    return {"modules": listed, "folders": env.motion_folders(), "checkpoint_base": checkpoint}


def motion_loras() -> Dict[str, Any]:
    """The motion LoRAs found (names for `motion_loras` and `<lora:NAME:W>`) and the folders searched."""
    from .motion_loras import lora_folders, lora_names

    folders = lora_folders()
    return {"loras": lora_names(folders), "folders": folders}


def register_routes(app: FastAPI) -> None:
    """Add the routes once (the WebUI may call `on_app_started` again after a UI reload)."""
    existing = {getattr(route, "path", None) for route in app.routes}
    if TXT2VID_PATH not in existing:
        app.add_api_route(TXT2VID_PATH, txt2vid, methods=["POST"])
    if MODULES_PATH not in existing:
        app.add_api_route(MODULES_PATH, motion_modules, methods=["GET"])
    if LORAS_PATH not in existing:
        app.add_api_route(LORAS_PATH, motion_loras, methods=["GET"])
