"""Fake modules.sd_samplers_kdiffusion: KDiffusionSampler's constructor (funcname may be a callable), its CFG denoiser
(x0 out, `inner_model` a k-diffusion wrapper with sigma_to_t), initialize (routes randn_like to p.rng) and sample
(x * sigmas[0], then func(model_wrap_cfg, x, extra_args=..., disable=False, callback=..., sigmas=...))."""
import inspect

import k_diffusion.external
import k_diffusion.sampling
from modules import sd_samplers_cfg_denoiser, sd_samplers_common, shared


class CFGDenoiserKDiffusion(sd_samplers_cfg_denoiser.CFGDenoiser):
    def __init__(self, sampler):
        super().__init__(sampler)
        self.model_wrap = k_diffusion.external.CompVisDenoiser(shared.sd_model)
        self.steps = self.total_steps = None

    @property
    def inner_model(self):
        return self.model_wrap

    def forward(self, x, sigma, cond=None, uncond=None, cond_scale=1.0, image_cond=None, s_min_uncond=0.0):
        return self.model_wrap.denoise(x, sigma, cond, uncond, cond_scale)


class KDiffusionSampler:
    def __init__(self, funcname, sd_model, options=None):
        self.funcname, self.config, self.options = funcname, None, options or {}
        self.func = funcname if callable(funcname) else getattr(k_diffusion.sampling, funcname)
        self.model_wrap_cfg = CFGDenoiserKDiffusion(self)
        self.model_wrap = self.model_wrap_cfg.inner_model
        self.steps_seen = []

    def get_sigmas(self, p, steps):
        raise NotImplementedError("the stand-in has no schedules of its own")

    def callback_state(self, d):
        self.steps_seen.append(d["i"])

    def initialize(self, p):
        self.p = p
        k_diffusion.sampling.torch = sd_samplers_common.TorchHijack(p)
        return {}

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        steps = steps or p.steps
        sigmas = self.get_sigmas(p, steps)
        x = x * sigmas[0]
        extra = self.initialize(p)
        if "sigmas" in inspect.signature(self.func).parameters:
            extra["sigmas"] = sigmas
        args = {"cond": conditioning, "uncond": unconditional_conditioning, "cond_scale": p.cfg_scale,
                "image_cond": image_conditioning, "s_min_uncond": 0.0}
        return self.func(self.model_wrap_cfg, x, extra_args=args, disable=False, callback=self.callback_state,
                         **extra)
