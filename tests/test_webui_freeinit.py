"""FreeInit and interpolation in the WebUI: the wrapped p.sample runs the WebUI's sampling once per pass from
FreeInit's noise (through p.rng), 1 iteration changes nothing, Interrupt ends the passes, img2img and hires fix are
refused by name; interpolation writes fps x factor clips with the infotext entry."""
from __future__ import annotations

import types

import pytest
import torch
from einops import rearrange

from ccdm_core.freeinit import FreeInitSettings, reinitialised_noise
from ccdm_core.video import read_video
from ccdm_core.webui.settings import CCDMSettings, CCDMSettingsError
from test_webui_script import FakeP, enabled, run_script, webui, sd_and_module  # noqa: F401  (fixtures)

FRAMES = 4


class SeededRng:
    """Like the WebUI's ImageRNG: each next() draws new noise for the batch."""

    def __init__(self, shape=(FRAMES, 4, 8, 8), seed=0):
        self.shape, self.generator, self.draws = shape, torch.Generator().manual_seed(seed), 0

    def next(self):
        self.draws += 1
        return torch.randn(self.shape, generator=self.generator)


def fake_p(**settings):
    alphas = torch.linspace(0.99, 0.01, 1000)
    p = types.SimpleNamespace(rng=SeededRng(), sd_model=types.SimpleNamespace(alphas_cumprod=alphas), enable_hr=False)
    run = types.SimpleNamespace(settings=CCDMSettings(enabled=True, frames=FRAMES, context_length=4,
                                                      context_overlap=2, **settings), is_img2img=False)
    seen = []

    def sample():  # the WebUI's p.sample: its noise from p.rng, a "denoised" result that depends on it
        x = p.rng.next()
        seen.append(x)
        return torch.tanh(x) * 0.5
    return p, run, sample, seen


def test_one_iteration_is_one_plain_sampling(webui):
    from ccdm_core.webui.freeinit_passes import sample_with_freeinit

    p, run, sample, seen = fake_p()
    reference = torch.tanh(SeededRng().next()) * 0.5
    assert torch.equal(sample_with_freeinit(p, run, sample), reference) and len(seen) == 1


def test_later_passes_start_from_freeinit_noise_and_show_as_jobs(webui):
    from ccdm_core.webui.freeinit_passes import _sigma_max, sample_with_freeinit

    p, run, sample, seen = fake_p(freeinit_iterations=3, freeinit_noise="initial")
    webui.shared.state.job_count, webui.shared.state.job_no = 1, 0
    out = sample_with_freeinit(p, run, sample)
    assert len(seen) == 3 and webui.shared.state.job_count == 3 and webui.shared.state.job_no == 2
    video = lambda x: rearrange(x, "(b f) c h w -> b c f h w", f=FRAMES)  # noqa: E731
    expected = reinitialised_noise(video(torch.tanh(seen[0]) * 0.5), video(seen[0]), None,
                                   FreeInitSettings(iterations=3, noise="initial"), _sigma_max(p))
    assert torch.allclose(video(seen[1]), expected, atol=1e-6)
    assert torch.equal(out, torch.tanh(seen[2]) * 0.5) and isinstance(p.rng, SeededRng)


def test_interrupt_ends_the_passes(webui):
    from ccdm_core.webui.freeinit_passes import sample_with_freeinit

    p, run, sample, seen = fake_p(freeinit_iterations=4)

    def interrupted_after_first():
        result = sample()
        webui.shared.state.interrupted = True
        return result
    out = sample_with_freeinit(p, run, interrupted_after_first)
    webui.shared.state.interrupted = False
    assert len(seen) == 1 and torch.equal(out, torch.tanh(seen[0]) * 0.5) and isinstance(p.rng, SeededRng)


@pytest.mark.parametrize("img2img, hires", [(True, False), (False, True)])
def test_img2img_and_hires_fix_refuse_freeinit(webui, img2img, hires):
    from ccdm_core.webui.freeinit_passes import check_freeinit

    p, run, _, _ = fake_p(freeinit_iterations=2)
    run.is_img2img, p.enable_hr = img2img, hires
    with pytest.raises(CCDMSettingsError) as info:
        check_freeinit(p, run)
    assert info.value.field == "freeinit_iterations"


def test_interpolation_writes_fps_times_the_factor_with_its_infotext(webui):
    p = FakeP(webui.sd_model, webui.root / "out")
    run_script(p, enabled(formats=["mp4"], interpolate=3))
    assert p.extra_generation_params["CCDM interpolate"] == 3
    frames, fps = read_video(next((webui.root / "out").rglob("*.mp4")))
    assert len(frames) == (6 - 1) * 3 + 1 and fps == pytest.approx(8 * 3, rel=0.02)
    assert webui.shared.state.textinfo.endswith(": 16/16 frames")  # the phase shows its progress
