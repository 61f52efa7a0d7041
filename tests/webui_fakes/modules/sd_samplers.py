"""Fake modules.sd_samplers: the sampler registry of 1.6.0 (all_samplers, all_samplers_map, set_samplers, ...)."""
from modules import sd_samplers_common

all_samplers = [sd_samplers_common.SamplerData(name, None, [], {})
                for name in ("Euler a", "Euler", "DDIM", "DPM++ 2M Karras")]
all_samplers_map = {x.name: x for x in all_samplers}
samplers = []
samplers_for_img2img = []
samplers_map = {}


def set_samplers():
    global samplers, samplers_for_img2img
    samplers = all_samplers
    samplers_for_img2img = all_samplers
    samplers_map.clear()
    for sampler in all_samplers:
        samplers_map[sampler.name.lower()] = sampler.name
        for alias in sampler.aliases:
            samplers_map[alias.lower()] = sampler.name


def visible_sampler_names():
    return [x.name for x in samplers]


def create_sampler(name, model):
    config = all_samplers_map.get(name)
    assert config is not None, f"bad sampler name: {name}"
    if config.constructor is None:  # the stand-ins for the WebUI's own samplers
        return ("sampler", name)
    sampler = config.constructor(model)
    sampler.config = config
    return sampler


set_samplers()
