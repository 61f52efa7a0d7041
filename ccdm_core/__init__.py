"""CCDM engine: motion modules, injection, schedules, context windows, fusion and the standalone pipeline."""
from .errors import CCDMError
from .inject import MotionHandle, inject_motion
from .motion import MotionInfo, MotionModule
from .motion_io import inspect_motion_file, load_motion_module, save_motion_module
from .unet_slots import new_motion_module
from .windows import WindowedDenoiser, plan_windows

__all__ = [
    "CCDMError", "MotionHandle", "MotionInfo", "MotionModule", "WindowedDenoiser", "inject_motion",
    "inspect_motion_file", "load_motion_module", "new_motion_module", "plan_windows", "save_motion_module",
]
