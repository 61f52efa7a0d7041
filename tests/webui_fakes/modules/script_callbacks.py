"""Fake modules.script_callbacks: records the registered callbacks by hook name."""
registered = {}


def _add(name):
    def register(callback):
        registered.setdefault(name, []).append(callback)
    return register


on_ui_tabs = _add("ui_tabs")
on_ui_settings = _add("ui_settings")
on_app_started = _add("app_started")
on_script_unloaded = _add("script_unloaded")
on_cfg_denoiser = _add("cfg_denoiser")
on_cfg_after_cfg = _add("cfg_after_cfg")
on_infotext_pasted = _add("infotext_pasted")
