"""WebUI entry point of CCDM: the always-on script "CCDM", the txt2vid tab and the API (all in ccdm_core.webui)."""
from ccdm_core.webui import entry
from ccdm_core.webui.script import CCDMScript  # noqa: F401  (the WebUI registers the Script subclasses it finds here)

entry.register_callbacks()
