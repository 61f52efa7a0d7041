"""Read and write the ldm model `.yaml` the WebUI keeps beside a checkpoint (v1-inference.yaml's layout)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ccdm_core.errors import CCDMError
from ccdm_core.sd.configs import sd15_unet_config
from ccdm_core.sd.vae import sd15_vae_config

DEFAULT_CLIP_VERSION = "openai/clip-vit-large-patch14"
UNET_TARGET = "ldm.modules.diffusionmodules.openaimodel.UNetModel"
VAE_TARGET = "ldm.models.autoencoder.AutoencoderKL"
CLIP_TARGET = "ldm.modules.encoders.modules.FrozenCLIPEmbedder"
MODEL_TARGET = "ldm.models.diffusion.ddpm.LatentDiffusion"


@dataclass(frozen=True)
class LdmConfig:
    """What the engine needs from an ldm model config; the defaults are SD1.5's."""

    unet: dict = field(default_factory=sd15_unet_config)
    ddconfig: dict = field(default_factory=sd15_vae_config)
    embed_dim: int = 4
    clip_version: str = DEFAULT_CLIP_VERSION
    scale_factor: float = 0.18215
    linear_start: float = 0.00085
    linear_end: float = 0.012
    timesteps: int = 1000


def _section(node: Any, path: str, where: Path, required: bool = True) -> dict:
    """Walk a dotted path of mappings; a missing optional section is {}."""
    for name in path.split("."):
        if isinstance(node, dict) and isinstance(node.get(name), dict):
            node = node[name]
        elif required:
            raise CCDMError(f"model config {where} lacks the mapping '{path}'; expected ldm's v1-inference.yaml layout")
        else:
            return {}
    return node


def _refuse_other_families(root: dict, params: dict, where: Path) -> None:
    """SD2.x and SDXL configs name OpenCLIP, 1024-wide context or sgm classes; refuse them by name."""
    target = str(root.get("model", {}).get("target", ""))
    cond_target = str(_section(params, "cond_stage_config", where, required=False).get("target", ""))
    unet = _section(params, "unet_config.params", where, required=False)
    if target.startswith("sgm.") or "conditioner_config" in params or "network_config" in params:
        raise CCDMError(f"model config {where} describes an SDXL model ({target}); the standalone engine takes SD "
                        "1.x only: animate SDXL checkpoints in the WebUI extension")
    if "OpenCLIP" in cond_target or unet.get("context_dim") == 1024 or unet.get("use_linear_in_transformer"):
        raise CCDMError(f"model config {where} describes an SD 2.x model (OpenCLIP text encoder / context_dim 1024); "
                        "only SD 1.x is accepted")
    if params.get("parameterization", "eps") != "eps":
        raise CCDMError(f"model config {where} uses parameterization {params['parameterization']!r}; "
                        "only 'eps' (SD 1.x) is accepted")


def read_ldm_yaml(path: os.PathLike) -> LdmConfig:
    """Parse an ldm config: unet_config.params, first_stage_config.params, cond_stage_config.params.version."""
    where = Path(path)
    try:
        root = yaml.safe_load(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CCDMError(f"cannot read model config {where}: {str(exc).splitlines()[0]}") from exc
    params = _section(root, "model.params", where)
    _refuse_other_families(root, params, where)
    first_stage = _section(params, "first_stage_config.params", where, required=False)
    defaults = LdmConfig()
    try:
        return LdmConfig(
            unet=dict(_section(params, "unet_config.params", where, required=False) or defaults.unet),
            ddconfig=dict(first_stage.get("ddconfig") or defaults.ddconfig),
            embed_dim=int(first_stage.get("embed_dim", defaults.embed_dim)),
            clip_version=str(_section(params, "cond_stage_config.params", where, required=False)
                             .get("version", defaults.clip_version)),
            scale_factor=float(params.get("scale_factor", defaults.scale_factor)),
            linear_start=float(params.get("linear_start", defaults.linear_start)),
            linear_end=float(params.get("linear_end", defaults.linear_end)),
            timesteps=int(params.get("timesteps", defaults.timesteps)),
        )
    except (TypeError, ValueError) as exc:
        raise CCDMError(f"model config {where} has a malformed value: {exc}") from exc


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so that yaml.safe_dump writes plain YAML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def ldm_yaml_text(config: LdmConfig, clip_version: Optional[str] = None) -> str:
    """v1-inference.yaml with this model's shapes; the WebUI 1.6.0 instantiates it as a normal SD1 model."""
    cond_stage: dict = {"target": CLIP_TARGET}
    version = config.clip_version if clip_version is None else clip_version
    if version != DEFAULT_CLIP_VERSION:
        cond_stage["params"] = {"version": version}
    params = {
        "linear_start": config.linear_start, "linear_end": config.linear_end, "num_timesteps_cond": 1,
        "log_every_t": 200, "timesteps": config.timesteps, "first_stage_key": "jpg", "cond_stage_key": "txt",
        "image_size": 64, "channels": config.embed_dim, "cond_stage_trainable": False,
        "conditioning_key": "crossattn", "monitor": "val/loss_simple_ema", "scale_factor": config.scale_factor,
        "use_ema": False,
        "unet_config": {"target": UNET_TARGET, "params": _plain(config.unet)},
        "first_stage_config": {"target": VAE_TARGET, "params": {
            "embed_dim": config.embed_dim, "monitor": "val/rec_loss", "ddconfig": _plain(config.ddconfig),
            "lossconfig": {"target": "torch.nn.Identity"}}},
        "cond_stage_config": cond_stage,
    }
    root = {"model": {"base_learning_rate": 1.0e-04, "target": MODEL_TARGET, "params": params}}
    return yaml.safe_dump(root, sort_keys=False)
