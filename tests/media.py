"""Source videos made in the tests with the bundled ffmpeg: a moving test pattern with a tone track."""
from __future__ import annotations

import base64
import subprocess
from pathlib import Path

from ccdm_core.video import _ffmpeg_exe


def tone_video(path: Path, width: int, height: int, fps: int, seconds: float) -> Path:
    """An H.264 mp4 of ffmpeg's `testsrc` pattern (fps x seconds frames) with a 440 Hz AAC tone."""
    proc = subprocess.run([_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
                           "-f", "lavfi", "-i", f"testsrc=size={width}x{height}:rate={fps}:duration={seconds}",
                           "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
                           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr[-500:]
    return path


def data_url(path: Path) -> str:
    return "data:video/mp4;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
