"""app.py in a real browser: Debian's chromium driven by Playwright. Generates faces, reads the page in Chinese,
uploads a photo, paints a stroke on the image editor's canvas, completes it and checks the stroke was filled in.

The browser is /usr/bin/chromium (make test installs Debian's package), never one Playwright downloads: the
pinned Playwright is the release whose own Chromium has the same major version (requirements-app-test.txt).
Outside CI a missing chromium skips this test and says why; under CI=true it fails.
Screenshots go to the test's tmp folder, and also to APP_SCREENSHOT_DIR when it is set (docs/ for the README:
APP_TEST_CKPT=output/demo/checkpoint.safetensors APP_SCREENSHOT_DIR=docs pytest tests/test_app_browser.py).
"""

import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pretreat
from conftest import need

CHROMIUM = "/usr/bin/chromium"
# headless without a GPU: Gradio's image editor draws with WebGL (PixiJS), which headless Chromium gives only
# through SwiftShader; no background traffic (updates, sync, first-run pages), a fresh profile per context
FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def playwright():
    if not os.path.exists(CHROMIUM):
        msg = f"no {CHROMIUM} (Debian's chromium package; make test installs it as root: apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    sync_api = need("playwright.sync_api", "the browser test")
    with sync_api.sync_playwright() as p:
        yield p


def open_page(playwright, url: str, locale: str, profile: Path):
    """A fresh browser profile in `locale`, on the app's page, once Gradio has drawn the tabs."""
    ctx = playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        args=FLAGS,
        headless=True,
        locale=locale,
        viewport={"width": 1400, "height": 1000},
    )
    page = ctx.pages[0] if ctx.pages else ctx.new_page()
    page.set_default_timeout(60_000)
    page.goto(url, wait_until="load")
    page.wait_for_selector("#generate-btn")
    return ctx, page


def image_of(page, selector: str) -> np.ndarray:
    """The pixels of the <img> inside `selector`, fetched from the server the page got it from."""
    img = page.locator(f"{selector} img").first
    img.wait_for()
    src = img.get_attribute("src")
    data = page.request.get(src).body() if not src.startswith("data:") else None
    assert data is not None, f"unexpected inline image in {selector}"
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def shoot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    if os.environ.get("APP_SCREENSHOT_DIR"):
        shutil.copy(tmp_path / name, Path(os.environ["APP_SCREENSHOT_DIR"]) / name)


def test_chromium_matches_playwright_pin():
    """The pin in requirements-app-test.txt follows Debian's chromium: same major version as Playwright's own."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no {CHROMIUM}")
    major = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.split()[1].split(".")[0]
    pins = (Path(__file__).parent.parent / "requirements-app-test.txt").read_text()
    assert f"Chromium {major}" in pins, f"Debian's chromium is {major}: re-pin Playwright (see the comment there)"


def test_in_a_browser(playwright, app_server, tmp_path):
    ctx, page = open_page(playwright, app_server, "en-US", tmp_path / "profile-en")
    hosts = set()
    page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
    try:
        # Generate: a grid of faces that is not a blank image
        page.click("#generate-btn")
        page.wait_for_selector("#gen-grid img")
        grid = image_of(page, "#gen-grid")
        assert grid.shape == (8 * 66 + 2, 8 * 66 + 2, 3) and grid[2:66, 2:66].std() > 1.0
        shoot(page, tmp_path, "app_generate.png")

        # Complete a photo: upload, one stroke across the middle of the canvas, a short completion
        page.get_by_role("tab", name="Complete a photo").click()
        photo = tmp_path / "face.jpg"  # a demo face at CelebA's size, so that the crop has something to cut
        Image.fromarray(pretreat.demo_faces()[7]).resize((178, 218), Image.Resampling.BICUBIC).save(photo, quality=95)
        page.set_input_files("#upload input[type=file]", str(photo))
        page.get_by_text("cropped to 64x64").wait_for()
        face = image_of(page, "#crop")
        canvas = page.locator("#editor canvas").first
        box = canvas.bounding_box()
        y = box["y"] + box["height"] * 0.5
        page.mouse.move(box["x"] + box["width"] * 0.3, y)
        page.mouse.down()
        for f in np.linspace(0.3, 0.7, 12):
            page.mouse.move(box["x"] + box["width"] * f, y)
        page.mouse.up()
        page.locator("#complete-btn").click()
        page.get_by_text("pixels filled").wait_for(timeout=120_000)
        result = image_of(page, "#out-blended")
        masked = image_of(page, "#out-masked")
        shoot(page, tmp_path, "app_screenshot.png")
    finally:
        ctx.close()
    hole = (masked == 255).all(axis=2) & ~(face == 255).all(axis=2)
    assert hole[28:36, 24:40].any(), "the stroke did not reach the mask"
    assert not hole[:16].any() and not hole[-16:].any(), "the mask is more than the stroke"
    assert (result[hole] != face[hole]).any(), "nothing changed inside the stroke"
    np.testing.assert_array_equal(result[~hole], face[~hole])  # and nothing outside it
    assert hosts <= {app_server.split("/")[2]}, f"the page reached other hosts: {hosts}"


def test_chinese_labels(playwright, app_server, tmp_path):
    ctx, page = open_page(playwright, app_server, "zh-CN", tmp_path / "profile-zh")
    try:
        for label in ("生成", "插值", "人脸运算", "补全照片", "模型"):
            page.get_by_role("tab", name=label).wait_for()
        page.get_by_text("人脸数量").wait_for()
        page.get_by_role("tab", name="补全照片").click()
        page.get_by_text("我的笔刷").wait_for()  # (the choices of a radio too)
        shown = page.locator("body").inner_text()
        assert "__i18n__" not in shown and "Complete" not in shown, shown  # every label translated
        shoot(page, tmp_path, "app_zh.png")
    finally:
        ctx.close()
