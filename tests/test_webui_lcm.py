"""The LCM sampler in the WebUI's sampler list (stand-in `modules` with 1.6.0's registry and KDiffusionSampler):
listed once, its sigmas LCM's skipping schedule of the schedule in force, its steps those of `sample_lcm` with
the WebUI's per-image noise (p.rng), deterministic per seed and the same alone or in a batch."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from ccdm_core.lcm import lcm_sigmas, sample_lcm
from ccdm_core.sampling import DiscreteSchedule
from ccdm_core.schedules import make_alphas_cumprod
from ccdm_core.webui.settings import CCDMSettingsError

FAKES = Path(__file__).resolve().parent / "webui_fakes"
SHAPE = (4, 6, 6)


class ToyModel:
    """An eps model that depends on x, t and the conditioning (so every input of a step matters)."""

    def __init__(self, schedule="scaled_linear"):
        self.alphas_cumprod = make_alphas_cumprod(schedule, 0.00085, 0.012, 1000).float()

    def apply_eps(self, x, t, cond):
        return 0.6 * x + 0.002 * t[:, None, None, None] * cond[:, :1, None, None] - 0.1 * x.roll(1, dims=-1)


@pytest.fixture
def fake_webui(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKES))
    _drop()
    from modules import shared

    shared.sd_model = ToyModel()
    yield shared
    _drop()


def _drop():
    for name in [n for n in sys.modules if n.split(".")[0] in ("modules", "k_diffusion")]:
        del sys.modules[name]


def _p(shared, seeds, steps=4, cfg_scale=1.5):
    from modules.rng import ImageRNG

    return types.SimpleNamespace(sd_model=shared.sd_model, steps=steps, cfg_scale=cfg_scale,
                                 rng=ImageRNG(SHAPE, seeds), seeds=seeds)


def _conds(n):
    return torch.linspace(0.5, 1.5, n)[:, None].repeat(1, 3), torch.zeros(n, 3)


def _run(shared, seeds, steps=4):
    from modules import sd_samplers

    p = _p(shared, seeds, steps)
    sampler = sd_samplers.create_sampler("LCM", shared.sd_model)
    cond, uncond = _conds(len(seeds))
    return sampler.sample(p, p.rng.first(), cond, uncond), sampler, p


def test_lcm_is_listed_once_for_txt2img_and_img2img(fake_webui):
    from modules import sd_samplers

    from ccdm_core.webui.lcm_sampler import register_lcm_sampler

    assert "LCM" not in sd_samplers.visible_sampler_names()
    assert register_lcm_sampler() is True
    assert register_lcm_sampler() is False  # a script reload adds nothing
    assert [x.name for x in sd_samplers.all_samplers].count("LCM") == 1
    assert "LCM" in sd_samplers.visible_sampler_names() and "LCM" in [x.name for x in sd_samplers.samplers_for_img2img]
    assert sd_samplers.samplers_map["k_lcm"] == "LCM"


def test_entry_registers_it_with_the_callbacks(fake_webui):
    from modules import sd_samplers

    from ccdm_core.webui import entry

    entry.register_callbacks()
    assert "LCM" in sd_samplers.all_samplers_map


def test_sigmas_are_the_skipping_schedule_of_the_schedule_in_force(fake_webui):
    from modules import sd_samplers

    from ccdm_core.webui.lcm_sampler import register_lcm_sampler

    register_lcm_sampler()
    sampler = sd_samplers.create_sampler("LCM", fake_webui.sd_model)
    p = _p(fake_webui, [1])
    assert torch.equal(sampler.get_sigmas(p, 6), lcm_sigmas(fake_webui.sd_model.alphas_cumprod, 6))
    p.sd_model = ToyModel("linear")  # CCDM swaps in the motion module's schedule for a video run
    assert torch.equal(sampler.get_sigmas(p, 6), lcm_sigmas(p.sd_model.alphas_cumprod, 6))
    with pytest.raises(CCDMSettingsError) as err:
        sampler.get_sigmas(p, 60)
    assert err.value.field == "steps" and "1..50" in str(err.value)


def test_sampling_is_sample_lcm_with_the_webuis_per_image_noise(fake_webui):
    from ccdm_core.webui.lcm_sampler import register_lcm_sampler

    register_lcm_sampler()
    out, sampler, _ = _run(fake_webui, [11, 12])
    assert sampler.steps_seen == [0, 1, 2, 3]  # the WebUI's progress callback saw every step
    # the reference: the engine's sampler on the same model and noise, per image
    from modules.rng import ImageRNG

    model = fake_webui.sd_model
    schedule = DiscreteSchedule(model.alphas_cumprod)
    cond, uncond = _conds(2)
    sigmas = lcm_sigmas(model.alphas_cumprod, 4)
    rng = ImageRNG(SHAPE, [11, 12])

    def denoise(x, sigma):
        t = schedule.sigma_to_t(sigma)
        scaled = x * ((sigma**2 + 1) ** -0.5)[:, None, None, None]
        eps_u, eps_c = model.apply_eps(scaled, t, uncond), model.apply_eps(scaled, t, cond)
        return x - (eps_u + 1.5 * (eps_c - eps_u)) * sigma[:, None, None, None]

    reference = sample_lcm(denoise, rng.first() * sigmas[0], sigmas, noise_sampler=lambda s, n: rng.next(),
                           sigma_to_t=schedule.sigma_to_t)
    assert torch.allclose(out, reference, atol=1e-5)


def test_deterministic_per_seed_and_the_same_alone_or_in_a_batch(fake_webui):
    from ccdm_core.webui.lcm_sampler import register_lcm_sampler

    register_lcm_sampler()
    batch = _run(fake_webui, [11, 12])[0]
    again = _run(fake_webui, [11, 12])[0]
    other = _run(fake_webui, [13, 12])[0]
    assert torch.equal(batch, again)
    assert not torch.allclose(batch[0], other[0]) and torch.allclose(batch[1], other[1], atol=1e-6)


def test_the_hint_names_the_recommended_settings():
    from ccdm_core.webui.lcm_sampler import sampler_hint

    assert "4-8 steps" in sampler_hint("LCM") and "CFG scale 1-2" in sampler_hint("LCM")
    assert sampler_hint("Euler a") == ""


def test_an_animatelcm_module_with_another_sampler_gets_a_note(capsys):
    from ccdm_core.webui.module_notes import sampler_note

    module = types.SimpleNamespace(info=types.SimpleNamespace(format="animatelcm", recommended_sampler="lcm"))
    for picked, noted in (("Euler a", True), ("LCM", False)):
        sampler_note(types.SimpleNamespace(sampler_name=picked), module)
        out = capsys.readouterr().out
        assert ("meant for the LCM sampler" in out and f"running with {picked}" in out) is noted
    sampler_note(types.SimpleNamespace(sampler_name="Euler a"),
                 types.SimpleNamespace(info=types.SimpleNamespace(format="animatediff-v2", recommended_sampler=None)))
    assert capsys.readouterr().out == ""


def test_hotshot_with_windows_longer_than_its_training_clips_gets_a_note(capsys):
    from ccdm_core.webui.module_notes import context_note

    hotshot = types.SimpleNamespace(info=types.SimpleNamespace(format="hotshot-xl"))
    for length, frames, noted in ((16, 16, True), (8, 16, False), (16, 6, False)):
        context_note(hotshot, types.SimpleNamespace(context_length=length, frames=frames))
        assert ("context length 8 is recommended" in capsys.readouterr().out) is noted
