"""UNet configurations (ldm `UNetModel` keyword arguments) for SD1.5 and the tiny test/demo size."""
from __future__ import annotations


def sd15_unet_config() -> dict:
    """The SD1.x UNet (v1-inference.yaml), 859.5 M parameters."""
    return dict(
        image_size=32, in_channels=4, out_channels=4, model_channels=320,
        attention_resolutions=[4, 2, 1], num_res_blocks=2, channel_mult=[1, 2, 4, 4],
        num_heads=8, use_spatial_transformer=True, transformer_depth=1, context_dim=768,
        use_checkpoint=False, legacy=False,
    )


def tiny_unet_config(model_channels: int = 32, context_dim: int = 32) -> dict:
    """An SD1-architecture UNet with small widths (same block layout as SD1.5)."""
    cfg = sd15_unet_config()
    cfg.update(model_channels=model_channels, context_dim=context_dim)
    return cfg


def build_unet(config: dict):
    """Instantiate ldm's `UNetModel` (the class the WebUI runs) from keyword arguments."""
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel(**config)
