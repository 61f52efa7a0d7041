"""The keyframe timeline in a real browser: headless Chromium driven by Playwright against a gradio 3.41.2 page
that mounts CCDM's txt2vid tab outside the WebUI (tests/webui_fakes/timeline_page.py, run in the gradio-3 venv).

Screenshots go to tests/artifacts/timeline/ (git-ignored); their paths are printed. Skipped only when no
Chromium (CCDM_CHROMIUM, `chromium`, `chromium-browser`), no Playwright or no gradio-3 venv can be found;
`make test` installs all three.
"""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ccdm_core.infotext import build_infotext
from ccdm_core.keyframes import image_digest, parse_prompt_schedule, parse_value_schedule
from ccdm_core.webui.settings import CCDMSettings, CCDMSettingsError
from ccdm_core.webui.timeline import parse_timeline_state

from env_groups import webui_python

ROOT = Path(__file__).resolve().parents[1]
GRADIO3 = webui_python()
ARTIFACTS = ROOT / "tests" / "artifacts" / "timeline"
CHROMIUM = os.environ.get("CCDM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
STATE = "#ccdm_keyframes_json textarea"
TIMELINE = "#ccdm_timeline"
CN_OPTIONS = "#ccdm_controlnet_options textarea"
# the stand-in ControlNet of timeline_page.py: its lists as CCDM offers them (no per-batch-only preprocessors)
CN_MODULES = ["none", "canny", "depth_midas", "openpose"]
CN_MODELS = ["control_v11p_sd15_canny [d14c016b]", "control_v11f1p_sd15_depth [cfd03158]"]
CN_UNIT = "#txt2img_controlnet_ControlNet"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(url: str, server: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the page server exited: {server.stdout.read()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the page server did not answer at {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    if not CHROMIUM:
        pytest.skip("no Chromium found (CCDM_CHROMIUM, chromium, chromium-browser); make test installs Debian's")
    if not GRADIO3.exists():
        pytest.skip(f"no gradio 3.41.2 environment at {GRADIO3} (make test creates .venv/webui)")
    root = tmp_path_factory.mktemp("timeline_webui")
    (root / "models" / "ccdm").mkdir(parents=True)
    port = _free_port()
    env = {**os.environ, "CCDM_FAKE_WEBUI_ROOT": str(root), "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_TEMP_DIR": str(root / "gradio-tmp")}
    env.pop("PYTHONPATH", None)
    server = subprocess.Popen([str(GRADIO3), str(ROOT / "tests" / "webui_fakes" / "timeline_page.py"), str(port)],
                              cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(url, server)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def browser(page_url):
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (make test installs it)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        yield chromium
        chromium.close()


def open_page(browser, page_url):
    """The test page with the txt2vid tab shown; page errors fail the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    # nothing outside the page server (gradio's theme asks for web fonts)
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(page_url) else route.abort())
    page.goto(page_url)
    page.wait_for_selector(f"{TIMELINE} .ccdm-toolbar", state="attached", timeout=60_000)
    page.click("#tabs > .tab-nav > button:has-text('txt2vid')")
    page.wait_for_selector(f'{TIMELINE} .ccdm-slot[data-frame="15"]')
    page.wait_for_function("() => window.ccdmTimeline.instances()[0].slotWidth > 0")  # fitted once shown
    yield page
    context.close()
    assert not errors, errors


@pytest.fixture
def page(browser, page_url):
    """The test page without ControlNet (the server's default)."""
    yield from open_page(browser, page_url)


def set_controlnet(page_url: str, state: str) -> None:
    with urllib.request.urlopen(f"{page_url}ccdm-test/controlnet/{state}", timeout=10) as response:
        assert json.load(response) == {"controlnet": state}


@pytest.fixture
def cn_page(browser, page_url):
    """The test page loaded while the stand-in ControlNet is installed in the server (removed again after)."""
    set_controlnet(page_url, "on")
    try:
        yield from open_page(browser, page_url)
    finally:
        set_controlnet(page_url, "off")


def shot(page, name: str, selector: str = "#ccdm_timeline_panel") -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.locator(selector).screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def png_bytes(width: int, height: int) -> bytes:
    ramp = np.linspace(0, 255, width, dtype=np.float64)
    pixels = np.stack([np.tile(ramp, (height, 1)), np.tile(ramp[::-1], (height, 1)),
                       np.tile(np.linspace(0, 255, height)[:, None], (1, width))], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def state(page) -> list:
    return json.loads(page.input_value(STATE) or "[]")


def wait_state(page, predicate: str) -> list:
    """Wait until `predicate` (JS over `s`, the parsed state list) holds; return the state."""
    page.wait_for_function(f"() => {{ const t = document.querySelector('{STATE}'); "
                           f"const s = JSON.parse(t.value || '[]'); return {predicate}; }}", timeout=10_000)
    return state(page)


def drop_file(page, frame: int, data: bytes, name: str = "photo.png", mime: str = "image/png") -> None:
    """What the browser does when a file from the desktop is dropped on a slot (in one step of the page, so a
    re-render of the strip cannot come between finding the slot and dropping on it)."""
    page.evaluate("""([selector, b64, name, mime]) => {
        const slot = document.querySelector(selector);
        slot.scrollIntoView({block: 'nearest', inline: 'center'});
        const transfer = new DataTransfer();
        transfer.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name, {type: mime}));
        for (const type of ['dragenter', 'dragover', 'drop']) {
            slot.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer}));
        }
    }""", [f'{TIMELINE} .ccdm-slot[data-frame="{frame}"]', base64.b64encode(data).decode("ascii"), name, mime])


def drag_card(page, source: int, target: int) -> None:
    page.locator(f"{TIMELINE} .ccdm-scroller").scroll_into_view_if_needed()
    thumb = page.locator(f'{TIMELINE} .ccdm-keyframe[data-frame="{source}"] .ccdm-thumb').bounding_box()
    slot = page.locator(f'{TIMELINE} .ccdm-slot[data-frame="{target}"]').bounding_box()
    page.mouse.move(thumb["x"] + thumb["width"] / 2, thumb["y"] + thumb["height"] / 2)
    page.mouse.down()
    page.mouse.move(slot["x"] + slot["width"] / 2, slot["y"] + 40, steps=8)
    page.mouse.up()


def python_parse(page) -> dict:
    """The page's button that runs ccdm_core.webui.timeline.parse_timeline_state on the state Python received."""
    page.fill("#page_parsed textarea", "")
    page.click("#page_parse_state")
    page.wait_for_function("() => document.querySelector('#page_parsed textarea').value !== ''", timeout=10_000)
    return json.loads(page.input_value("#page_parsed textarea"))


def test_drop_drag_strength_and_delete(page):
    started = time.monotonic()
    assert page.locator("#ccdm_txt2vid_keyframes").count() == 0  # the tab's plain JSON box gave way to the timeline
    drop_file(page, 8, png_bytes(1600, 900))
    kfs = wait_state(page, "s.length === 1 && s[0].frame === 8 && s[0].image")
    card = page.locator(f'{TIMELINE} .ccdm-keyframe[data-frame="8"]')
    card.locator("img.ccdm-thumb").wait_for()
    assert card.locator("img.ccdm-thumb").evaluate("img => img.complete && img.naturalWidth") == 1024
    image = Image.open(io.BytesIO(base64.b64decode(kfs[0]["image"].split(",", 1)[1])))
    assert image.size == (1024, 576)  # downscaled in the page before it travelled
    assert python_parse(page)["keyframes"] == [{"frame": 8, "strength": 1.0, "prompt": None,
                                                "image_chars": len(kfs[0]["image"])}]
    shot(page, "01_dropped_on_8")

    drag_card(page, 8, 3)
    wait_state(page, "s.length === 1 && s[0].frame === 3")
    assert page.locator(f'{TIMELINE} .ccdm-keyframe[data-frame="3"] img.ccdm-thumb').count() == 1
    assert page.locator(f'{TIMELINE} .ccdm-keyframe[data-frame="8"]').count() == 0
    page.fill(f'{TIMELINE} .ccdm-keyframe[data-frame="3"] .ccdm-strength', "0.4")
    page.fill(f'{TIMELINE} .ccdm-keyframe[data-frame="3"] .ccdm-prompt', "a red car")
    wait_state(page, "s[0].strength === 0.4 && s[0].prompt === 'a red car'")
    assert page.input_value(f"{TIMELINE} .ccdm-schedule-strength") == "3:(0.4)"
    assert json.loads(page.input_value(f"{TIMELINE} .ccdm-schedule-prompt")) == {"3": "a red car"}
    page.fill(f'{TIMELINE} .ccdm-keyframe[data-frame="3"] .ccdm-strength', "1.5")  # out of range: marked, kept
    assert "ccdm-invalid" in page.get_attribute(f'{TIMELINE} .ccdm-keyframe[data-frame="3"] .ccdm-strength', "class")
    assert state(page)[0]["strength"] == 0.4
    shot(page, "02_dragged_to_3_strength_0.4")

    page.click(f'{TIMELINE} .ccdm-keyframe[data-frame="3"] .ccdm-thumb')
    page.keyboard.press("ArrowRight")
    wait_state(page, "s[0].frame === 4")
    page.keyboard.press("Delete")
    wait_state(page, "s.length === 0")
    assert page.locator(f"{TIMELINE} .ccdm-keyframe").count() == 0
    drop_file(page, 2, png_bytes(64, 48))
    wait_state(page, "s.length === 1 && s[0].frame === 2")
    page.click(f'{TIMELINE} .ccdm-keyframe[data-frame="2"] .ccdm-thumb')
    page.click(f"{TIMELINE} .ccdm-delete")
    wait_state(page, "s.length === 0")
    assert python_parse(page) == {"keyframes": [], "extras": {}, "controlnet": {}}
    print(f"drop/drag/strength/delete: {time.monotonic() - started:.1f} s")


def test_schedule_text_drives_the_cards_and_bad_text_is_marked(page):
    strengths = f"{TIMELINE} .ccdm-schedule-strength"
    prompts = f"{TIMELINE} .ccdm-schedule-prompt"
    drop_file(page, 5, png_bytes(40, 30))
    wait_state(page, "s.length === 1 && s[0].frame === 5")
    page.fill(strengths, "0:(1.0), 5:(0.6), 12:(0.25)")
    kfs = wait_state(page, "s.length === 3")
    assert [(k["frame"], k["strength"]) for k in kfs] == [(0, 1.0), (5, 0.6), (12, 0.25)]
    assert kfs[1]["image"] and kfs[0]["image"] is None  # the card at 5 keeps its image
    assert page.locator(f"{TIMELINE} .ccdm-keyframe").count() == 3
    page.fill(prompts, '{"5": "a dog", "14": "a cat"}')
    kfs = wait_state(page, "s.length === 4")
    assert [(k["frame"], k["prompt"]) for k in kfs] == [(0, None), (5, "a dog"), (12, None), (14, "a cat")]
    assert page.input_value(f'{TIMELINE} .ccdm-keyframe[data-frame="5"] .ccdm-prompt') == "a dog"
    assert page.input_value(strengths) == "0:(1), 5:(0.6), 12:(0.25), 14:(1)"  # the other side follows
    # the JS text forms are the engine's: Python's parsers read them back to the same keyframes
    page.locator(f"{TIMELINE} .ccdm-info").click()
    assert parse_value_schedule(page.input_value(strengths)) == {k["frame"]: k["strength"] for k in kfs}
    assert parse_prompt_schedule(page.input_value(prompts)) == {k["frame"]: k["prompt"] for k in kfs if k["prompt"]}
    shot(page, "03_schedule_text")

    for bad, reason in [("0:(1), 5:(", '"5:(" is not FRAME:(STRENGTH)'), ("0:(1), 40:(1)", "frame 40 is outside"),
                        ("0:(1.5)", "strength at frame 0 must be a number in 0..1")]:
        page.fill(strengths, bad)
        page.wait_for_selector(f"{TIMELINE} .ccdm-schedule-strength.ccdm-invalid")
        assert reason in page.inner_text(f"{TIMELINE} .ccdm-error-strength")
        assert len(state(page)) == 4 and page.locator(f"{TIMELINE} .ccdm-keyframe").count() == 4
    page.fill(prompts, '{"5": "a dog"')
    page.wait_for_selector(f"{TIMELINE} .ccdm-schedule-prompt.ccdm-invalid")
    assert "not JSON" in page.inner_text(f"{TIMELINE} .ccdm-error-prompt") and len(state(page)) == 4
    shot(page, "04_bad_text_marked")
    page.fill(strengths, "5:(0.5)")
    kfs = wait_state(page, "s.length === 1")
    assert kfs[0]["frame"] == 5 and kfs[0]["strength"] == 0.5 and kfs[0]["image"] and kfs[0]["prompt"] == "a dog"
    assert "ccdm-invalid" not in page.get_attribute(strengths, "class")


def test_slots_follow_frames_and_fps_and_long_clips_zoom_and_scroll(page):
    frames_box = "#ccdm_txt2vid_frames input[type=number]"
    page.fill(frames_box, "24")
    page.wait_for_selector(f'{TIMELINE} .ccdm-slot[data-frame="23"]')
    assert page.locator(f"{TIMELINE} .ccdm-slot").count() == 24
    page.fill("#ccdm_txt2vid_fps input[type=number]", "12")
    page.wait_for_function(f"() => document.querySelector('{TIMELINE} .ccdm-slot[data-frame=\"18\"]').title"
                           " === 'frame 18 \u00b7 1.50 s'")
    assert page.inner_text(f'{TIMELINE} .ccdm-slot[data-frame="12"] .ccdm-slot-time') == "1s"
    page.fill(frames_box, "256")
    page.wait_for_selector(f'{TIMELINE} .ccdm-slot[data-frame="255"]', state="attached")
    scroller = page.locator(f"{TIMELINE} .ccdm-scroller")
    assert scroller.evaluate("s => s.scrollWidth > s.clientWidth")  # a long clip scrolls
    width = lambda: page.locator(f'{TIMELINE} .ccdm-slot[data-frame="0"]').evaluate(  # noqa: E731
        "s => s.getBoundingClientRect().width")
    before = width()
    page.click(f"{TIMELINE} .ccdm-zoom-in")
    page.click(f"{TIMELINE} .ccdm-zoom-in")
    assert width() > before
    page.click(f"{TIMELINE} .ccdm-zoom-fit")
    assert width() == before
    drop_file(page, 200, png_bytes(32, 32))
    wait_state(page, "s.length === 1 && s[0].frame === 200")
    assert scroller.evaluate("s => s.scrollLeft") > 0
    page.click(f'{TIMELINE} .ccdm-keyframe[data-frame="200"] .ccdm-thumb')
    page.keyboard.press("Shift+ArrowRight")
    wait_state(page, "s[0].frame === 210")
    shot(page, "05_256_frames")
    page.fill(frames_box, "16")  # the keyframe past the end stays, marked, until it is moved
    page.wait_for_selector(f'{TIMELINE} .ccdm-keyframe.ccdm-outside[data-frame="210"]', state="attached")
    assert python_parse(page)["error"] == ("keyframes: keyframe #0 at frame 210 is outside the clip; accepted "
                                           "frames 0..15")


def test_filmstrip_pin_and_send_to_txt2vid(page):
    page.click("#tabs > .tab-nav > button:has-text('txt2img')")
    page.click("#ccdm_send_txt2img")
    kfs = wait_state(page, "s.length === 1 && s[0].frame === 0 && s[0].image")
    assert page.is_visible(TIMELINE)  # the txt2vid tab is shown
    sent = Image.open(io.BytesIO(base64.b64decode(kfs[0]["image"].split(",", 1)[1])))
    assert sent.size == (96, 64)
    page.click("#page_fill_frames")
    page.wait_for_selector(f'{TIMELINE} .ccdm-pin[data-frame="5"]')
    assert page.locator(f"{TIMELINE} .ccdm-film").count() == 12
    page.click(f'{TIMELINE} .ccdm-pin[data-frame="5"]')
    kfs = wait_state(page, "s.length === 2 && s[1].frame === 5 && s[1].image")
    pinned = np.asarray(Image.open(io.BytesIO(base64.b64decode(kfs[1]["image"].split(",", 1)[1]))).convert("RGB"))
    assert pinned.shape == (64, 64, 3) and pinned[0, 0].tolist() != pinned[-1, -1].tolist()
    shot(page, "06_filmstrip_pinned_5")


def test_paste_restores_keyframes_and_matches_images_by_hash(page):
    drop_file(page, 4, png_bytes(50, 40))
    kfs = wait_state(page, "s.length === 1 && s[0].image")
    digest = image_digest(kfs[0]["image"])[:10]
    infotext = build_infotext("a castle", "", {"Steps": 20, "CCDM frames": 16, "CCDM keyframes": "2:(0.5), 9:(0.8)",
                                               "CCDM keyframe images": f"2:{digest}, 9:0123456789"})
    page.fill("#ccdm_txt2vid_prompt textarea", infotext)
    page.click("#ccdm_txt2vid_paste")
    kfs = wait_state(page, "s.length === 2 && s[0].frame === 2")
    assert [(k["frame"], k["strength"], bool(k["image"])) for k in kfs] == [(2, 0.5, True), (9, 0.8, False)]
    page.wait_for_selector(f'{TIMELINE} .ccdm-keyframe[data-frame="2"] img.ccdm-thumb')
    assert "frame 9 (0123456789)" in page.inner_text("#ccdm_timeline_status")
    assert page.input_value("#ccdm_txt2vid_prompt textarea") == "a castle"
    shot(page, "07_pasted")


def test_controlnet_field_survives_edits_and_init_runs_once(page):
    cn = {"module": "canny", "model": "control_v11p_sd15_canny", "weight": 0.7, "radius": 1}
    page.evaluate("""([selector, value]) => {
        const box = document.querySelector(selector);
        box.value = value;  // as Python writes it (e.g. another panel's code)
        box.dispatchEvent(new Event('input', {bubbles: true}));
    }""", [STATE, json.dumps([{"frame": 6, "strength": 0.9, "prompt": None, "image": None, "controlnet": cn}])])
    page.wait_for_selector(f'{TIMELINE} .ccdm-keyframe[data-frame="6"]')
    for _ in range(2):
        page.evaluate("() => window.ccdmTimeline.init()")  # a second init must not build a second timeline
    assert page.evaluate("() => window.ccdmTimeline.instances().length") == 1
    assert page.locator(f"{TIMELINE} .ccdm-toolbar").count() == 1
    assert page.locator("#ccdm_send_txt2img").count() == 1
    drag_card(page, 6, 10)
    page.fill(f'{TIMELINE} .ccdm-keyframe[data-frame="10"] .ccdm-strength', "0.3")
    kfs = wait_state(page, "s.length === 1 && s[0].frame === 10 && s[0].strength === 0.3")
    assert kfs[0]["controlnet"] == cn
    assert python_parse(page)["extras"] == {"10": {"controlnet": cn}}
    drop_file(page, 10, png_bytes(20, 20))  # a new image on the card keeps its other fields
    kfs = wait_state(page, "s.length === 1 && s[0].image")
    assert kfs[0]["controlnet"] == cn and kfs[0]["strength"] == 0.3
    assert parse_timeline_state(json.dumps(kfs), 16).extras == {10: {"controlnet": cn}}


# ---- ControlNet on the cards ------------------------------------------------------------------------------------

def card(frame: int) -> str:
    return f'{TIMELINE} .ccdm-keyframe[data-frame="{frame}"]'


def options_of(page, selector: str) -> list:
    return page.eval_on_selector(selector, "s => Array.from(s.options, (o) => [o.value, o.textContent])")


def test_without_controlnet_the_cards_show_nothing_of_it(page):
    page.wait_for_selector(CN_OPTIONS, state="attached")  # the invisible gradio 3.41 textbox is in the page
    assert page.locator("#ccdm_controlnet_options").is_hidden()
    assert json.loads(page.input_value(CN_OPTIONS)) == {"modules": [], "models": []}
    drop_file(page, 4, png_bytes(40, 30))
    kfs = wait_state(page, "s.length === 1 && s[0].image")
    page.click(f"{card(4)} .ccdm-thumb")
    for hook in (".ccdm-cn", ".ccdm-cn-module", ".ccdm-cn-model", ".ccdm-cn-weight", ".ccdm-cn-radius",
                 ".ccdm-send-controlnet"):
        assert page.locator(f"{TIMELINE} {hook}").count() == 0, hook
    assert "controlnet" not in kfs[0]  # nothing written for it either
    assert page.locator(f"{TIMELINE} .ccdm-track.ccdm-with-cn").count() == 0
    assert page.locator(f'{TIMELINE} .ccdm-slot[data-frame="4"] .ccdm-lane').evaluate(
        "l => l.getBoundingClientRect().height") == 128  # the strip's layout is the one without ControlNet


def test_controlnet_card_controls_write_the_keyframe_condition(cn_page):
    page, started = cn_page, time.monotonic()
    # listed by controlnet_options_json() at this page load (ControlNet went in after the server built the page)
    assert json.loads(page.input_value(CN_OPTIONS)) == {"modules": CN_MODULES, "models": ["None"] + CN_MODELS}
    drop_file(page, 4, png_bytes(80, 60))
    kfs = wait_state(page, "s.length === 1 && s[0].image")
    assert "controlnet" not in kfs[0]  # shown controls change nothing until used
    model, module = f"{card(4)} .ccdm-cn-model", f"{card(4)} .ccdm-cn-module"
    weight, radius = f"{card(4)} .ccdm-cn-weight", f"{card(4)} .ccdm-cn-radius"
    assert options_of(page, model) == [["", "\u2014 off \u2014"]] + [[m, m] for m in CN_MODELS]
    assert [value for value, _ in options_of(page, module)] == CN_MODULES
    assert page.input_value(model) == "" and page.input_value(weight) == "1" and page.input_value(radius) == "0"
    assert page.is_disabled(module) and page.is_disabled(weight) and page.is_disabled(radius)

    page.select_option(model, CN_MODELS[0])
    kfs = wait_state(page, "s[0].controlnet && s[0].controlnet.model")
    assert kfs[0]["controlnet"] == {"module": "none", "model": CN_MODELS[0], "weight": 1, "radius": 0}
    page.select_option(module, "canny")
    page.fill(weight, "0.6")
    page.fill(radius, "3")
    kfs = wait_state(page, "s[0].controlnet.radius === 3 && s[0].controlnet.weight === 0.6")
    spec = {"module": "canny", "model": CN_MODELS[0], "weight": 0.6, "radius": 3}
    assert kfs[0]["controlnet"] == spec and list(kfs[0]["controlnet"]) == ["module", "model", "weight", "radius"]
    parsed = python_parse(page)  # in the page server: the timeline parser and the settings (which validate it)
    assert parsed["extras"] == {"4": {"controlnet": spec}} and parsed["controlnet"] == {"4": spec}
    assert CCDMSettings(frames=16, keyframes=json.dumps(kfs)).keyframes[0].controlnet.to_dict() == spec
    assert parse_timeline_state(json.dumps(kfs), 16).extras == {4: {"controlnet": spec}}

    for selector, bad in [(weight, "3"), (weight, "-0.1"), (radius, "1.5"), (radius, "-1")]:
        page.fill(selector, bad)  # marked, not applied
        assert "ccdm-invalid" in page.get_attribute(selector, "class"), (selector, bad)
        assert state(page)[0]["controlnet"] == spec
    with pytest.raises(CCDMSettingsError, match="controlnet.weight: 3 is out of range; accepted 0..2"):
        CCDMSettings(frames=16, keyframes=[{**kfs[0], "controlnet": {**spec, "weight": 3}}])  # as Python would say
    page.fill(weight, "3")
    page.click(f"{card(4)} .ccdm-prompt")  # leaving the box puts the applied value back
    assert page.input_value(weight) == "0.6" and "ccdm-invalid" not in page.get_attribute(weight, "class")
    page.fill(weight, "3")
    shot(page, "08_controlnet_card_weight_3_marked")

    page.select_option(model, label="\u2014 off \u2014")
    kfs = wait_state(page, "s[0].controlnet === null")
    assert page.is_disabled(module) and page.is_disabled(weight)
    assert python_parse(page) == {"keyframes": [{"frame": 4, "strength": 1.0, "prompt": None,
                                                 "image_chars": len(kfs[0]["image"])}], "extras": {}, "controlnet": {}}
    page.select_option(model, CN_MODELS[1])  # on again: the part's values, the invalid weight not taken
    kfs = wait_state(page, "s[0].controlnet !== null")
    assert kfs[0]["controlnet"] == {"module": "canny", "model": CN_MODELS[1], "weight": 1, "radius": 3}
    print(f"ControlNet card controls: {time.monotonic() - started:.1f} s")


def test_controlnet_condition_from_the_state_shows_even_when_not_listed(cn_page):
    page = cn_page
    cn = {"module": "openpose_full", "model": "control_v11p_sd15_openpose", "weight": 0.5, "radius": 2}
    page.evaluate("""([selector, value]) => {
        const box = document.querySelector(selector);
        box.value = value;
        box.dispatchEvent(new Event('input', {bubbles: true}));
    }""", [STATE, json.dumps([{"frame": 7, "strength": 1, "prompt": None, "image": None, "controlnet": cn}])])
    page.wait_for_selector(f"{card(7)} .ccdm-cn-model")
    assert page.input_value(f"{card(7)} .ccdm-cn-model") == cn["model"]
    assert options_of(page, f"{card(7)} .ccdm-cn-model")[-1] == [cn["model"], cn["model"] + " (not listed)"]
    assert page.input_value(f"{card(7)} .ccdm-cn-module") == cn["module"]
    assert (page.input_value(f"{card(7)} .ccdm-cn-weight"), page.input_value(f"{card(7)} .ccdm-cn-radius")) == (
        "0.5", "2")
    assert page.is_disabled(f"{card(7)} .ccdm-send-controlnet")  # no image to send
    page.fill(f"{card(7)} .ccdm-cn-radius", "0")
    kfs = wait_state(page, "s[0].controlnet.radius === 0")
    assert kfs[0]["controlnet"] == {**cn, "radius": 0}


def test_send_to_controlnet_fills_unit_0_and_enables_it(cn_page):
    page, started = cn_page, time.monotonic()
    drop_file(page, 2, png_bytes(80, 60))
    wait_state(page, "s.length === 1 && s[0].image")
    checkbox = f"{CN_UNIT}_controlnet_enable_checkbox input[type=checkbox]"
    assert not page.is_checked(checkbox) and page.locator(f"{CN_UNIT}_input_image img").count() == 0
    page.click(f"{card(2)} .ccdm-send-controlnet")
    page.wait_for_selector(f"{CN_UNIT}_input_image img")  # shown in the unit, which is visible: tab and accordion
    assert page.is_visible("#txt2img_controlnet .label-wrap.open") and page.is_visible(f"{CN_UNIT}_input_image")
    page.wait_for_function(f"() => document.querySelector('{checkbox}').checked")
    status = f"{TIMELINE} .ccdm-status"
    assert page.text_content(status) == "Keyframe 2 sent to ControlNet unit 0 (txt2img) and the unit enabled."
    page.fill("#page_parsed textarea", "")
    page.click("#page_cn_image")
    page.wait_for_function("() => document.querySelector('#page_parsed textarea').value !== ''", timeout=10_000)
    assert json.loads(page.input_value("#page_parsed textarea")) == {"shape": [60, 80, 3]}  # what Python received
    shot(page, "09_sent_to_controlnet", "#txt2img_controlnet")

    # ControlNet with several units names unit 0 "ControlNet-0"
    page.click(checkbox)
    page.evaluate("""(unit) => {
        for (const suffix of ['_input_image', '_controlnet_enable_checkbox']) {
            document.querySelector(unit + suffix).id = unit.slice(1) + '-0' + suffix;
        }
    }""", CN_UNIT)
    page.click("#tabs > .tab-nav > button:has-text('txt2vid')")
    page.click(f"{card(2)} .ccdm-send-controlnet")
    page.wait_for_function(f"() => document.querySelector('{CN_UNIT}-0_controlnet_enable_checkbox input').checked")
    page.wait_for_function(f"() => document.querySelector('{status}').textContent.includes('unit enabled')")

    # missing pieces are named in the status line, nothing throws (page errors fail the test)
    page.evaluate("() => { document.querySelector('#txt2img_controlnet').id = 'renamed'; }")
    page.click("#tabs > .tab-nav > button:has-text('txt2vid')")
    page.click(f"{card(2)} .ccdm-send-controlnet")
    page.wait_for_function(f"() => document.querySelector('{status}').textContent.includes('#txt2img_controlnet')")
    assert page.text_content(status) == "ControlNet not found: no #txt2img_controlnet in the page."
    assert "ccdm-status-error" in page.get_attribute(status, "class")
    page.evaluate(f"""() => {{ document.querySelector('#renamed').id = 'txt2img_controlnet';
        document.querySelector('{CN_UNIT}-0_input_image').id = 'gone'; }}""")
    page.click("#tabs > .tab-nav > button:has-text('txt2vid')")
    page.click(f"{card(2)} .ccdm-send-controlnet")
    page.wait_for_function(f"() => document.querySelector('{status}').textContent.startsWith('ControlNet unit 0')")
    assert page.text_content(status) == ("ControlNet unit 0 not found: no #txt2img_controlnet_ControlNet-0_input_image"
                                         " or #txt2img_controlnet_ControlNet_input_image.")
    print(f"send to ControlNet: {time.monotonic() - started:.1f} s")
