"""The txt2vid tab of a live WebUI 1.6.0 in a browser: a video uploaded as "Video source" is previewed (count, fps,
first and last frame), takes all its frames, and makes a video-to-video clip with the source in its infotext and
the consistency report under it (`CCDM_WEBUI_URL=... make test-webui`; Debian's chromium and Playwright)."""
from __future__ import annotations

import os
import shutil

import pytest

from media import tone_video
from test_webui_live import SIZE, STEPS, URL, call, pick_module

pytestmark = [pytest.mark.webui, pytest.mark.skipif(not URL, reason="set CCDM_WEBUI_URL to a live WebUI 1.6.0")]
CHROMIUM = os.environ.get("CCDM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
TAB = "#ccdm_txt2vid"


def webui_page(tab=None, height: int = 1800):
    """A headless Chromium page on the live WebUI, switched to `tab` (None: the first tab); a generator for fixtures."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM:
        pytest.skip("no Chromium found (CCDM_CHROMIUM, chromium, chromium-browser)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": height})
        page.goto(URL + "/", timeout=120000)
        page.wait_for_selector("#tabs", timeout=120000)
        if tab:
            page.get_by_role("button", name=tab, exact=True).click()
        yield page
        browser.close()


@pytest.fixture(scope="module")
def page():
    yield from webui_page("txt2vid")


def _set_number(page, elem: str, value) -> None:
    selector = f"{TAB}_{elem} input[type=number]"
    page.fill(selector, str(value))
    page.press(selector, "Enter")


def test_an_uploaded_video_is_previewed_and_restyled(page, tmp_path):
    status, listing = call("/ccdm/v1/motion-modules")
    assert status == 200, listing
    motion = pick_module(listing)
    source = tone_video(tmp_path / "source.mp4", SIZE, SIZE, 8, 1.5)  # 12 frames with a tone
    page.fill(f"{TAB}_prompt textarea", "a painting")
    for elem, value in (("width", SIZE), ("height", SIZE), ("steps", STEPS), ("context_length", 6),
                        ("context_overlap", 2)):
        _set_number(page, elem, value)
    page.click(f"{TAB}_motion_module input")
    page.click(f"{TAB}_motion_module li:has-text('{motion.split(' [')[0]}')")
    page.click(f"{TAB}_source .label-wrap")
    page.set_input_files(f"{TAB}_source_video input[type=file]", str(source))
    page.wait_for_function(f"document.querySelector('{TAB}_source_preview').innerText.includes('frames at')",
                           timeout=120000)
    assert "12 frames at 8 fps (source frames 0..11" in page.inner_text(f"{TAB}_source_preview")
    assert page.input_value(f"{TAB}_frames input[type=number]") == "0"  # all the source gives
    _set_number(page, "frames", 6)
    page.click(f"{TAB}_generate")
    page.wait_for_function(f"document.querySelector('{TAB}_infotext textarea').value.includes('CCDM')",
                           timeout=600000)
    info = page.input_value(f"{TAB}_infotext textarea")
    assert "CCDM source: " in info and " 0/1/6" in info and "Denoising strength: 0.6" in info
    assert "6 frames at 8 fps: warp error" in page.inner_text(f"{TAB}_report_html")
