"""WebUI installer hook: installs only the runtime packages the WebUI's venv lacks, quietly when all are present.

The WebUI 1.6.0 runs this on every start (not under --skip-install / --skip-prepare-environment). Its own pins
(torch, numpy, einops, safetensors, Pillow, omegaconf, gradio) are never upgraded: packages are installed only
when they cannot be imported at all.
"""
from importlib import metadata

import launch

# import name -> pip requirement (lower bounds only: never pull a newer numpy or torch into the WebUI)
REQUIREMENTS = {
    "einops": "einops>=0.4.1",
    "safetensors": "safetensors>=0.3.1",
    "imageio_ffmpeg": "imageio-ffmpeg>=0.4.8",  # the ffmpeg binary for mp4/webm
    "PIL": "Pillow>=9.5",
}
OPENCV = ("cv2", "opencv-python-headless")  # any OpenCV the WebUI already has is kept
# Installed distributions held at their installed version in every pip call: a plain `pip install
# opencv-python-headless` next to the WebUI's numpy 1.23.5 upgrades numpy to 2.x (seen on a live 1.6.0 venv).
HELD = ("numpy", "torch", "Pillow")


def missing(requirements=REQUIREMENTS, opencv=OPENCV, is_installed=None):
    """The pip requirements whose module cannot be imported."""
    is_installed = is_installed or launch.is_installed
    wanted = [req for module, req in requirements.items() if not is_installed(module)]
    if not is_installed(opencv[0]):
        wanted.append(opencv[1])
    return wanted


def held_pins(held=HELD, version=metadata.version):
    """`name==version` for each held distribution that is installed (pip then keeps it as it is)."""
    pins = []
    for name in held:
        try:
            pins.append(f"{name}=={version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def pip_args(requirement, pins):
    return " ".join(["install", f'"{requirement}"'] + [f'"{pin}"' for pin in pins])


def main():
    pins = held_pins()
    for requirement in missing():
        launch.run_pip(pip_args(requirement, pins), f"{requirement} for CCDM")


if __name__ == "__main__":  # the WebUI runs install.py as a script in its venv
    main()
