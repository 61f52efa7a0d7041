"""CCDM training: motion (+fusion) modules learned from video on a frozen SD1.x model (paper sections 3.1-3.2)."""
from .config import TrainConfig
from .losses import LossWeights, ccdm_loss, eps_mse, keyframe_loss, temporal_neighbour_loss

__all__ = ["TrainConfig", "LossWeights", "ccdm_loss", "eps_mse", "keyframe_loss", "temporal_neighbour_loss"]
