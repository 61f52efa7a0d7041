"""The "LCM" sampler in the WebUI's sampler list (txt2img, img2img, the txt2vid tab, the API), registered as the
WebUI's own k-diffusion samplers are (`SamplerData` in `sd_samplers.all_samplers`): a `KDiffusionSampler` whose
sigmas are LCM's skipping schedule and whose step is `ccdm_core.lcm.sample_lcm`. Fresh noise comes from the
WebUI's per-image generator (k-diffusion's `torch.randn_like`, which the WebUI routes to `p.rng`), so a seed gives
the same image alone or in a batch. CCDM's fusion and keyframes see its clean-latent estimate as for Euler."""
from __future__ import annotations

from ..errors import CCDMError
from ..lcm import RECOMMENDED, lcm_sigmas, sample_lcm
from .settings import CCDMSettingsError

SAMPLER_NAME = "LCM"
ALIASES = ["k_lcm", "lcm"]
HINT = (f"LCM: {RECOMMENDED['steps'][0]}-{RECOMMENDED['steps'][1]} steps and CFG scale "
        f"{RECOMMENDED['cfg_scale'][0]:g}-{RECOMMENDED['cfg_scale'][1]:g}, with an LCM LoRA or an AnimateLCM motion "
        "module (a model not distilled for LCM gives blurred results at few steps)")
_CLASS = {}


def sampler_hint(name) -> str:
    """The hint shown under a sampler dropdown when LCM is picked (empty otherwise)."""
    return HINT if name == SAMPLER_NAME else ""


def sample_lcm_webui(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """The sampler function KDiffusionSampler calls: `model` is the WebUI's CFG denoiser (x0 out), its
    `inner_model` the k-diffusion wrapper of the checkpoint (its `sigma_to_t` gives LCM's timesteps)."""
    import k_diffusion.sampling

    def noise(sigma, sigma_next):
        return k_diffusion.sampling.torch.randn_like(x)

    def report(info):
        if callback is not None:
            callback({"x": info["x"], "i": info["i"], "sigma": info["sigma"], "sigma_hat": info["sigma"],
                      "denoised": info["denoised"]})

    return sample_lcm(model, x, sigmas, extra_args=extra_args, callback=report, noise_sampler=noise,
                      sigma_to_t=model.inner_model.sigma_to_t)


def webui_lcm_sigmas(p, steps):
    """LCM's sigmas for the schedule in force (CCDM swaps in the module's alphas_cumprod for a video run)."""
    from modules import devices

    try:
        sigmas = lcm_sigmas(p.sd_model.alphas_cumprod, int(steps))
    except CCDMError as err:
        raise CCDMSettingsError("steps", str(err)) from None
    return sigmas.to(devices.device)


def sampler_class():
    """`LCMSampler(sd_model)`, a KDiffusionSampler (made once per WebUI class it subclasses)."""
    from modules import sd_samplers_kdiffusion

    base = sd_samplers_kdiffusion.KDiffusionSampler
    if base not in _CLASS:

        class LCMSampler(base):
            def __init__(self, sd_model):
                super().__init__(sample_lcm_webui, sd_model)

            def get_sigmas(self, p, steps):
                return webui_lcm_sigmas(p, steps)

        _CLASS[base] = LCMSampler
    return _CLASS[base]


def register_lcm_sampler() -> bool:
    """Add "LCM" to the WebUI's samplers (once; False when it is there already, from CCDM or another extension)."""
    from modules import sd_samplers, sd_samplers_common

    if SAMPLER_NAME in sd_samplers.all_samplers_map:
        return False
    data = sd_samplers_common.SamplerData(SAMPLER_NAME, lambda model: sampler_class()(model), ALIASES, {})
    sd_samplers.all_samplers.append(data)
    sd_samplers.all_samplers_map[SAMPLER_NAME] = data
    sd_samplers.set_samplers()
    return True
