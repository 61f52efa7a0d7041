"""Fake modules.paths_internal: folders under CCDM_FAKE_WEBUI_ROOT (default: the current directory)."""
import os

data_path = os.environ.get("CCDM_FAKE_WEBUI_ROOT", os.getcwd())
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(data_path, "extensions-builtin")
