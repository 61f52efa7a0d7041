"""The txt2vid tab of a live WebUI 1.6.0 in a browser: LCM picked shows its hint; a motion LoRA picked in the
multi-select is merged (its name and hash in the infotext) and a 6-step LCM clip is made
(`CCDM_WEBUI_URL=... make test-webui`; Debian's chromium and Playwright)."""
from __future__ import annotations

import pytest

from test_webui_live import SIZE, URL, call, pick_module
from test_webui_tab_v2v_live import TAB, _set_number, page  # noqa: F401  (fixture)

pytestmark = [pytest.mark.webui, pytest.mark.skipif(not URL, reason="set CCDM_WEBUI_URL to a live WebUI 1.6.0")]


def _pick(page, elem: str, text: str) -> None:
    page.click(f"{TAB}_{elem} input")
    page.click(f"{TAB}_{elem} li:has-text('{text}')")


def test_lcm_hint_and_a_picked_motion_lora_in_the_tab(page):
    status, listing = call("/ccdm/v1/motion-modules")
    assert status == 200, listing
    motion = pick_module(listing)
    status, loras = call("/ccdm/v1/motion-loras")
    if not loras["loras"]:
        pytest.skip(f"no motion LoRA in {loras['folders']}")
    page.fill(f"{TAB}_prompt textarea", "a red ball on grass")
    _pick(page, "sampler", "LCM")
    page.wait_for_selector(f"{TAB}_sampler_hint:has-text('4-8 steps')", timeout=30000)
    for elem, value in (("width", SIZE), ("height", SIZE), ("steps", 6), ("frames", 4), ("context_length", 4),
                        ("context_overlap", 1)):
        _set_number(page, elem, value)
    _pick(page, "motion_module", motion.split(" [")[0])
    name = loras["loras"][0]
    page.click(f"{TAB}_motion_lora_refresh")  # files added after the UI was built are listed after a refresh
    page.wait_for_timeout(1000)
    _pick(page, "motion_lora_names", name)
    page.fill(f"{TAB}_motion_lora_strengths textarea", "0.8")
    page.click(f"{TAB}_generate")
    page.wait_for_function(f"document.querySelector('{TAB}_infotext textarea').value.includes('CCDM')",
                           timeout=600000)
    info = page.input_value(f"{TAB}_infotext textarea")
    assert "Sampler: LCM" in info and "Steps: 6" in info
    assert f'CCDM motion LoRAs: "{name} [' in info and ']:0.8"' in info
