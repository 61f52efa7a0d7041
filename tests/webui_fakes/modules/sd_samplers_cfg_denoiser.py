"""Fake modules.sd_samplers_cfg_denoiser: the CFG denoiser base class (its get_pred_x0 is the identity, as in 1.6.0;
the k-diffusion samplers' denoiser inherits it)."""
import torch


class CFGDenoiser(torch.nn.Module):
    def __init__(self, sampler=None):
        super().__init__()
        self.sampler, self.mask, self.nmask, self.init_latent = sampler, None, None, None

    def get_pred_x0(self, x_in, x_out, sigma):
        return x_out
