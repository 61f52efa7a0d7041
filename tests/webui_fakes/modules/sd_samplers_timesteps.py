"""Fake modules.sd_samplers_timesteps: DDIM/PLMS/UniPC's CFG denoiser keeps the model's alphas_cumprod from when the
sampler is made and gives the clean latent from a noise prediction at whole timesteps (1.6.0's behaviour)."""
from modules import shared
from modules.sd_samplers_cfg_denoiser import CFGDenoiser


class CFGDenoiserTimesteps(CFGDenoiser):
    def __init__(self, sampler=None):
        super().__init__(sampler)
        self.alphas = shared.sd_model.alphas_cumprod

    def get_pred_x0(self, x_in, x_out, sigma):
        a = self.alphas[sigma.to(dtype=int)][:, None, None, None]
        return (x_in - (1 - a).sqrt() * x_out) / a.sqrt()
