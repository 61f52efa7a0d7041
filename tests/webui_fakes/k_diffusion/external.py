"""Fake k_diffusion.external.CompVisDenoiser: sigmas of the model's alphas_cumprod, sigma -> continuous timestep
(the project's own DiscreteSchedule stands in for k-diffusion's), and an eps model as a guided clean-latent
estimate D(x, sigma) = x - sigma * eps(x / sqrt(sigma^2 + 1), t)."""
from ccdm_core.sampling import DiscreteSchedule


class CompVisDenoiser:
    def __init__(self, model, quantize=False):
        self.inner_model = model
        self.schedule = DiscreteSchedule(model.alphas_cumprod)
        self.sigmas = self.schedule.sigmas.float()

    def sigma_to_t(self, sigma, quantize=None):
        return self.schedule.sigma_to_t(sigma)

    def denoise(self, x, sigma, cond, uncond, cond_scale):
        eps_of = self.inner_model.apply_eps
        scaled = x * ((sigma**2 + 1) ** -0.5)[:, None, None, None]
        t = self.sigma_to_t(sigma)
        eps = eps_of(scaled, t, uncond) + cond_scale * (eps_of(scaled, t, cond) - eps_of(scaled, t, uncond))
        return x - eps * sigma[:, None, None, None]
