"""Load, save and build SD1.x models (UNet, VAE, CLIP text encoder) in the WebUI's single-file layout."""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import nn

from ccdm_core.errors import CCDMError
from ccdm_core.hashing import file_sha256
from ccdm_core.sd.checkpoint import StateDict, check_sd1, join_components, preview_keys, split_components
from ccdm_core.sd.configs import build_unet, sd15_unet_config, tiny_unet_config
from ccdm_core.sd.ldm_yaml import DEFAULT_CLIP_VERSION, LdmConfig, ldm_yaml_text, read_ldm_yaml
from ccdm_core.sd.text_encoder import CLIPTextConfig, CLIPTextEncoder, infer_text_config
from ccdm_core.sd.tokenizer import CLIPTokenizer, write_text_atomic
from ccdm_core.sd.vae import AutoencoderKL, tiny_vae_config
from ccdm_core.tensorfile import read_tensors, write_safetensors

DEFAULT_TEXT_CONFIG = CLIPTextConfig(width=128, layers=2, heads=2)
CLIP_FOLDER_SUFFIX = ".clip"  # beside `<stem>.safetensors`: tokenizer + CLIPTextModel config.json for the WebUI
SCHEMA_VERSION = "1"


@dataclass
class SDModel:
    """An SD1.x model's parts plus the numbers the sampler needs (eps-prediction, scaled-linear betas)."""

    unet: nn.Module = field(repr=False)
    vae: AutoencoderKL = field(repr=False)
    text_encoder: CLIPTextEncoder = field(repr=False)
    tokenizer: CLIPTokenizer = field(repr=False)
    scale_factor: float = 0.18215
    linear_start: float = 0.00085
    linear_end: float = 0.012
    timesteps: int = 1000
    sha256: Optional[str] = None
    source: str = ""
    unet_config: dict = field(default_factory=sd15_unet_config)  # ldm UNetModel kwargs, written to the .yaml

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def encode_prompts(self, prompts: List[str], clip_skip: int = 1) -> torch.Tensor:
        """(n, 77, width) cross-attention context on the UNet's device and dtype, computed without grad."""
        with torch.no_grad():
            tokens = self.tokenizer.encode(prompts, max_length=self.text_encoder.config.max_positions)
            text_device = next(self.text_encoder.parameters()).device
            context = self.text_encoder(tokens.to(text_device), clip_skip=clip_skip)
        return context.to(device=self.device, dtype=self.dtype)

    def to(self, device: Union[str, torch.device, None] = None, dtype: Optional[torch.dtype] = None) -> "SDModel":
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(device=device, dtype=dtype)
        return self

    def eval(self) -> "SDModel":
        for module in (self.unet, self.vae, self.text_encoder):
            module.eval()
        return self


def _load_strict(module: nn.Module, state_dict: StateDict, part: str, name: str) -> None:
    """load_state_dict(strict=True), first naming missing, unexpected and wrongly shaped keys in one line."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    problems = [f"{label} {len(keys)} keys ({preview_keys(keys)})"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    if problems:
        raise CCDMError(f"{name}: the {part} weights do not fit the SD1 architecture: {'; '.join(problems)}; "
                        f"put the model's ldm config beside it as {Path(name).stem}.yaml")
    module.load_state_dict(state_dict, strict=True)


def _build_empty(factory: Callable[[], nn.Module]) -> nn.Module:
    """Construct on the meta device and allocate uninitialised CPU storage: skips random init before loading."""
    with torch.device("meta"):
        module = factory()
    module = module.to_empty(device="cpu")
    if {n for n, _ in module.named_buffers()} - set(module.state_dict()):
        return factory()  # a non-persistent buffer would stay uninitialised: build normally instead
    return module


def _clip_folder(version: str, yaml_path: Path) -> Optional[Path]:
    """A local tokenizer folder named by cond_stage_config.params.version (also looked for beside the yaml)."""
    if version == DEFAULT_CLIP_VERSION:
        return None
    given = Path(version).expanduser()
    candidates = [given, yaml_path.parent / given, yaml_path.parent / given.name]
    for candidate in candidates:
        if (candidate / "vocab.json").is_file():
            return candidate
    if given.is_absolute():
        warnings.warn(f"tokenizer folder {version} named in {yaml_path.name} was not found; using CLIP's tokenizer")
    return None


def _text_setup(config: LdmConfig, yaml_path: Path) -> Tuple[CLIPTokenizer, dict]:
    """The tokenizer, and heads/activation from a CLIPTextModel config.json in the same folder if there is one."""
    folder = _clip_folder(config.clip_version, yaml_path)
    if folder is None:
        return CLIPTokenizer.default(), {}
    hints = {}
    if (folder / "config.json").is_file():
        try:
            hf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CCDMError(f"cannot read {folder / 'config.json'}: {exc}") from exc
        hints = {"heads": int(hf.get("num_attention_heads", 0)), "activation": hf.get("hidden_act", "quick_gelu")}
    return CLIPTokenizer.from_folder(folder), hints


def _unet_kwargs(unet_config: dict, name: str) -> dict:
    kwargs = dict(unet_config, use_checkpoint=False)  # gradient checkpointing is a training-only switch
    if not kwargs.get("context_dim"):
        raise CCDMError(f"{name}: unet_config.params.context_dim is missing; SD1 uses 768 (the text width)")
    return kwargs


def load_sd_checkpoint(path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                       dtype: torch.dtype = torch.float32) -> SDModel:
    """An SD1.x single-file checkpoint (WebUI layout) with its optional `<stem>.yaml`, loaded strictly."""
    # 1. Read the tensors and make sure this is an SD1.x checkpoint.
    path = Path(path)
    state_dict, _ = read_tensors(path)
    check_sd1(state_dict, path.name)
    unet_sd, vae_sd, text_sd = split_components(state_dict, path.name)
    # 2. Architecture: the yaml beside it, else SD1.5's; the text encoder's shape comes from its weights.
    yaml_path = path.with_suffix(".yaml")
    config = read_ldm_yaml(yaml_path) if yaml_path.is_file() else LdmConfig()
    tokenizer, hints = _text_setup(config, yaml_path)
    text_config = infer_text_config(text_sd, **hints)
    unet_kwargs = _unet_kwargs(config.unet, path.name)
    if unet_kwargs["context_dim"] != text_config.width:
        raise CCDMError(f"{path.name}: the UNet's context_dim {unet_kwargs['context_dim']} differs from the text "
                        f"encoder width {text_config.width}; put the model's ldm config beside it as {path.stem}.yaml")
    # 3. Build each part without random init and load it strictly.
    parts = (
        (lambda: build_unet(unet_kwargs), unet_sd, "UNet"),
        (lambda: AutoencoderKL(config.ddconfig, config.embed_dim), vae_sd, "VAE"),
        (lambda: CLIPTextEncoder(text_config), text_sd, "text encoder"),
    )
    modules = []
    for factory, part_sd, label in parts:
        try:
            module = _build_empty(factory)
        except (TypeError, AssertionError, KeyError) as exc:
            raise CCDMError(f"{path.name}: cannot build the {label} from its config: {exc}") from exc
        _load_strict(module, part_sd, label, path.name)
        modules.append(module)
    del state_dict, unet_sd, vae_sd, text_sd
    model = SDModel(
        *modules, tokenizer, scale_factor=config.scale_factor, linear_start=config.linear_start,
        linear_end=config.linear_end, timesteps=config.timesteps, sha256=file_sha256(path), source=str(path),
        unet_config=dict(config.unet),
    )
    return model.to(device, dtype).eval()


def _is_default_clip(model: SDModel) -> bool:
    """Standard SD1 text encoder and CLIP's own tokenizer: the WebUI's default FrozenCLIPEmbedder fits."""
    default = CLIPTokenizer.default()
    tokenizer = model.tokenizer
    return model.text_encoder.config == CLIPTextConfig() and (
        tokenizer is default or (tokenizer.vocab == default.vocab and tokenizer.merges == default.merges))


def _hf_text_config(config: CLIPTextConfig, tokenizer: CLIPTokenizer) -> dict:
    """A transformers CLIPTextConfig as config.json, so the WebUI's FrozenCLIPEmbedder builds this shape."""
    return {
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": config.vocab_size,
        "hidden_size": config.width, "intermediate_size": config.width * config.mlp_ratio,
        "projection_dim": config.width, "num_hidden_layers": config.layers, "num_attention_heads": config.heads,
        "max_position_embeddings": config.max_positions, "hidden_act": config.activation, "layer_norm_eps": 1e-5,
        "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": 1,
        "torch_dtype": "float32",
    }


def _write_clip_folder(model: SDModel, folder: Path) -> None:
    """Tokenizer files plus config.json, the folder that cond_stage_config.params.version points to."""
    model.tokenizer.save_folder(folder)
    write_text_atomic(folder / "config.json", json.dumps(_hf_text_config(model.text_encoder.config, model.tokenizer),
                                                     indent=2))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    write_text_atomic(folder / "special_tokens_map.json", json.dumps(special, indent=2))
    write_text_atomic(folder / "tokenizer_config.json", json.dumps(dict(special, model_max_length=77), indent=2))


def save_sd_checkpoint(model: SDModel, path: Union[str, os.PathLike]) -> Path:
    """Write `path` (.safetensors, WebUI layout) and `<stem>.yaml`, each via a temporary file and os.replace.

    A non-standard text encoder or tokenizer also gets a `<stem>.clip/` folder (tokenizer + config.json) that the
    yaml names by absolute path, as the WebUI's FrozenCLIPEmbedder expects.
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise CCDMError(f"save_sd_checkpoint writes .safetensors only, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # 1. The text encoder's folder when the WebUI's default CLIP would not fit.
    version = DEFAULT_CLIP_VERSION
    if not _is_default_clip(model):
        folder = path.with_name(path.stem + CLIP_FOLDER_SUFFIX)
        _write_clip_folder(model, folder)
        version = str(folder.resolve())
    # 2. The yaml, then the tensors.
    config = LdmConfig(unet=dict(model.unet_config), ddconfig=dict(model.vae.ddconfig),
                       embed_dim=model.vae.embed_dim, clip_version=version, scale_factor=model.scale_factor,
                       linear_start=model.linear_start, linear_end=model.linear_end, timesteps=model.timesteps)
    write_text_atomic(path.with_suffix(".yaml"), ldm_yaml_text(config))
    tensors = join_components(model.unet.state_dict(), model.vae.state_dict(), model.text_encoder.state_dict())
    return write_safetensors(tensors, path, metadata={"format": "pt", "ccdm_schema": SCHEMA_VERSION})


def _reset_zero_layers(module: nn.Module) -> None:
    """ldm zero-initialises residual output layers, so a fresh UNet predicts exactly 0; give them default init."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)) and not layer.weight.detach().any():
            layer.reset_parameters()


def build_default_model(seed: int = 0) -> SDModel:
    """A small random SD1-architecture model (tiny UNet and VAE, 2-layer 128-wide CLIP); the same for a seed.

    The global RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextEncoder(DEFAULT_TEXT_CONFIG)
        unet_config = tiny_unet_config(context_dim=DEFAULT_TEXT_CONFIG.width)
        unet = build_unet(unet_config)
        _reset_zero_layers(unet)
        vae = AutoencoderKL(tiny_vae_config(), embed_dim=4)
    model = SDModel(unet, vae, text_encoder, CLIPTokenizer.default(), source=f"built-in random model (seed {seed})",
                    unet_config=unet_config)
    return model.eval()
