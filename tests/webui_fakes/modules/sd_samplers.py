"""Fake modules.sd_samplers: sampler names."""
all_samplers_map = {"Euler a": None, "Euler": None, "DDIM": None, "DPM++ 2M Karras": None}


def visible_sampler_names():
    return list(all_samplers_map)


def create_sampler(name, model):
    return ("sampler", name)
