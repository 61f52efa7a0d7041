"""The consistency report in the WebUI: computed for each clip after it is written (Settings > CCDM turns it off),
shown in the txt2vid tab, returned by the API, added to the script's comments, optionally saved as JSON."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Dict, Optional

from ..report import clip_report, report_plot, report_summary, write_report
from . import env


def report_for_clip(frames, fps: float, files) -> Optional[Dict[str, Any]]:
    """The report of one written clip (None when the setting is off); `<stem>.report.json` when asked for."""
    if not env.opt("ccdm_report"):
        return None
    report = clip_report(frames, fps, per_frame=True)
    if env.opt("ccdm_report_json") and files.infotext is not None:
        write_report(report, Path(files.infotext).with_name(f"{files.stem}.report.json"))
    return report


def api_report(report: Optional[Dict[str, Any]], per_frame: bool = False) -> Optional[Dict[str, Any]]:
    """The API's `report`: the numbers, with the per-pair lists only when asked for."""
    if report is None:
        return None
    return {k: v for k, v in report.items() if per_frame or k != "per_frame"}


def report_html(report: Optional[Dict[str, Any]]) -> str:
    if report is None:
        return ""
    rows = [("Frames", report["frames"]), ("FPS", report["fps"]), ("Warp error", report["warp_error"]),
            ("Flicker index", report["flicker_index"]), ("Motion magnitude (%)", report["motion_magnitude_pct"])]
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{'n/a' if v is None else html.escape(str(v))}</td></tr>"
                    for k, v in rows)
    return (f"<div class='ccdm-report'><p>{html.escape(report_summary(report))}</p>"
            f"<table>{cells}</table></div>")


def report_image(report: Optional[Dict[str, Any]]):
    """The per-pair warp error plot (None without a report)."""
    if report is None or "per_frame" not in report:
        return None
    return report_plot(report["per_frame"]["warp_error"])
