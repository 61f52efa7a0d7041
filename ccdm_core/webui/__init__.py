"""The WebUI side of CCDM: the only package that talks to the AUTOMATIC1111 WebUI (`modules.*`) and gradio.

Importing this package imports nothing; the WebUI-facing modules (`entry`, `script`, `ui`, `api`, `runtime`)
import `modules.*` and gradio, while `settings`, `discovery`, `outputs`, `video_unet`, `attention_dispatch`
and `patches` are plain engine code that the tests run without a WebUI.
"""
