"""WebUI-layout single-file checkpoints: tell SD1.x from SD2.x/SDXL, split into and join from components."""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch

from ccdm_core.errors import CCDMError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
POSITION_IDS_KEY = "text_model.embeddings.position_ids"
CONTEXT_KEY = UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
# LatentDiffusion's schedule buffers, EMA copies and training-loss modules: present in many files, not model weights.
IGNORED_KEYS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "logvar", "lvlb_weights",
})
IGNORED_PREFIXES = ("model_ema.", "first_stage_model.loss.")
# Older transformers versions had no `text_model.` level; the WebUI renames these the same way.
_OLD_TEXT_PREFIXES = ("embeddings.", "encoder.", "final_layer_norm.")

StateDict = Dict[str, torch.Tensor]


def preview_keys(keys: List[str], count: int = 3) -> str:
    """The first few keys, and the count when there are more."""
    shown = ", ".join(keys[:count])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > count else "")


def check_sd1(state_dict: StateDict, name: str) -> None:
    """Refuse SDXL, SD2.x and files that are not SD checkpoints, naming what was found."""
    keys = sorted(state_dict)
    if any(k.startswith("conditioner.") for k in keys):
        raise CCDMError(f"{name} is an SDXL checkpoint (found 'conditioner.*' keys); the standalone `ccdm` engine "
                        "takes Stable Diffusion 1.x checkpoints only: animate SDXL checkpoints in the WebUI extension "
                        "(AnimateDiff-SDXL and HotShot-XL modules)")
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        raise CCDMError(f"{name} is a Stable Diffusion 2.x checkpoint (found OpenCLIP 'cond_stage_model.model.*' "
                        "keys); only Stable Diffusion 1.x checkpoints are accepted")
    if CONTEXT_KEY in state_dict and state_dict[CONTEXT_KEY].shape[-1] == 1024:
        raise CCDMError(f"{name} is a Stable Diffusion 2.x checkpoint (UNet cross-attention context_dim 1024); "
                        "only Stable Diffusion 1.x (context_dim 768) checkpoints are accepted")
    for prefix, part in ((UNET_PREFIX, "UNet"), (VAE_PREFIX, "VAE"), (TEXT_PREFIX, "CLIP text encoder")):
        if not any(k.startswith(prefix) for k in keys):
            raise CCDMError(f"{name} is not a Stable Diffusion 1.x checkpoint: no {part} keys '{prefix}*' among its "
                            f"{len(keys)} tensors (found: {preview_keys(keys) or 'nothing'}); expected the WebUI's "
                            "single-file layout")


def _text_key(key: str) -> str:
    """Key inside CLIPTextModel, adding the `text_model.` level that old transformers versions lacked."""
    return "text_model." + key if key.startswith(_OLD_TEXT_PREFIXES) else key


def split_components(state_dict: StateDict, name: str) -> Tuple[StateDict, StateDict, StateDict]:
    """(unet, vae, text encoder) state dicts with the WebUI prefixes removed; unknown top-level keys are refused."""
    unet, vae, text, stray = {}, {}, {}, []
    for key, tensor in state_dict.items():
        if key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES):
            continue
        if key.startswith(UNET_PREFIX):
            unet[key[len(UNET_PREFIX):]] = tensor
        elif key.startswith(VAE_PREFIX):
            vae[key[len(VAE_PREFIX):]] = tensor
        elif key.startswith(TEXT_PREFIX):
            text_key = _text_key(key[len(TEXT_PREFIX):])
            if text_key != POSITION_IDS_KEY:
                text[text_key] = tensor
        else:
            stray.append(key)
    if stray:
        raise CCDMError(f"{name} has {len(stray)} keys outside the UNet/VAE/text encoder "
                        f"({preview_keys(sorted(stray))}); expected only '{UNET_PREFIX}*', '{VAE_PREFIX}*', '{TEXT_PREFIX}*'")
    return unet, vae, text


def join_components(unet: StateDict, vae: StateDict, text: StateDict) -> StateDict:
    """The WebUI's single-file layout: the three parts under their prefixes."""
    return {prefix + key: tensor for prefix, part in ((UNET_PREFIX, unet), (VAE_PREFIX, vae), (TEXT_PREFIX, text))
            for key, tensor in part.items()}
