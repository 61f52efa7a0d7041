"""WebUI installer hook: installs only the runtime packages the WebUI's venv lacks, quietly when all are present.

The WebUI 1.6.0 runs this on every start (not under --skip-install / --skip-prepare-environment). Its own pins
(torch, numpy, einops, safetensors, Pillow, omegaconf, gradio) are never upgraded: packages are installed only
when they cannot be imported at all.
"""
import launch

# import name -> pip requirement (lower bounds only: never pull a newer numpy or torch into the WebUI)
REQUIREMENTS = {
    "einops": "einops>=0.4.1",
    "safetensors": "safetensors>=0.3.1",
    "imageio_ffmpeg": "imageio-ffmpeg>=0.4.8",  # the ffmpeg binary for mp4/webm
    "PIL": "Pillow>=9.5",
}
OPENCV = ("cv2", "opencv-python-headless")  # any OpenCV the WebUI already has is kept


def missing(requirements=REQUIREMENTS, opencv=OPENCV, is_installed=launch.is_installed):
    """The pip requirements whose module cannot be imported."""
    wanted = [req for module, req in requirements.items() if not is_installed(module)]
    if not is_installed(opencv[0]):
        wanted.append(opencv[1])
    return wanted


def main():
    for requirement in missing():
        launch.run_pip(f'install "{requirement}"', f"{requirement} for CCDM")


if __name__ == "__main__":  # the WebUI runs install.py as a script in its venv
    main()
