"""The web page in headless Chromium on an index with recognised text: an OCR hit comes
first, its matched word is marked in the caption and boxed over the thumbnail, and the
"picture only" switch drops it; screenshots go to build/test-artifacts/.

The engine is scripted with the true boxes of the rendered words (Pillow's textbbox), so
the page test needs no OCR model (tests/index/test_ocr_rapid.py runs the real one)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn
from PIL import Image, ImageDraw, ImageFont
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

import clipforge
from clipforge.index.ocr import OcrLine
from clipforge.serve import ServeConfig, create_app
from tests.conftest import tiny_model
from tests.index_helpers import write_images
from tests.serve.test_serve_browser import ARTIFACTS, _cards

pytestmark = pytest.mark.slow  # ~4 s: its own Chromium and server

WORDS = {"receipt.png": ["invoice quartz", "total 42"], "sign.png": ["harbor street"]}


class RenderedText:
    """Returns the lines drawn into each image (keyed by size), with their real boxes."""

    name = "rendered"

    def __init__(self) -> None:
        self.lines: dict[tuple[int, int], list[OcrLine]] = {}

    def __call__(self, image: Image.Image) -> list[OcrLine]:
        return self.lines.get(image.size, [])


def _render(path, lines: list[str], size, engine: RenderedText) -> None:
    font = ImageFont.load_default(size=30)
    image = Image.new("RGB", size, (250, 250, 245))
    draw = ImageDraw.Draw(image)
    found = []
    for row, line in enumerate(lines):
        xy = (20, 30 + 60 * row)
        draw.text(xy, line, fill="black", font=font)
        box = tuple(float(v) for v in draw.textbbox(xy, line, font=font))
        found.append(OcrLine(line, box, 0.99))  # type: ignore[arg-type]
    image.save(path)
    engine.lines[size] = found


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser_ocr")
    photos = root / "photos"
    write_images(photos, 10)
    engine = RenderedText()
    _render(photos / "receipt.png", WORDS["receipt.png"], (320, 180), engine)
    _render(photos / "sign.png", WORDS["sign.png"], (300, 200), engine)
    index = clipforge.Index.open(root / "db", tiny_model())
    index.sync([photos], ocr=engine)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(index, ServeConfig()), host="127.0.0.1", port=port)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield index, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _search(browser, url: str, query: str, mode: str) -> list:
    browser.get(url + "/")
    Select(browser.find_element(By.ID, "ocr")).select_by_value(mode)
    browser.find_element(By.ID, "q").send_keys(query)
    browser.find_element(By.ID, "go").click()
    return _cards(browser, "results for")


def test_ocr_hit_is_marked_and_boxed(server, browser):
    index, url = server
    cards = _search(browser, url, "quartz", "auto")
    receipt = next(h for h in index.search("quartz", k=1, ocr="only"))
    assert int(cards[0].get_attribute("data-id")) == receipt.id
    assert "ocr-hit" in cards[0].get_attribute("class")
    marks = cards[0].find_elements(By.TAG_NAME, "mark")
    assert [m.text for m in marks] == ["quartz"]
    assert len(browser.find_elements(By.CSS_SELECTOR, ".ocr-hit")) == 1
    WebDriverWait(browser, 20).until(
        lambda b: b.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    rect = cards[0].find_element(By.CSS_SELECTOR, "rect.hl")
    thumb = cards[0].find_element(By.TAG_NAME, "img")
    r, t = rect.rect, thumb.rect
    assert r["width"] > 5 and r["height"] > 5  # drawn, and inside the thumbnail
    assert t["x"] <= r["x"] and r["x"] + r["width"] <= t["x"] + t["width"] + 1
    assert t["y"] <= r["y"] and r["y"] + r["height"] <= t["y"] + t["height"] + 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "search_page_ocr_hit.png"))

    only = _search(browser, url, "harbor street", "only")
    assert len(only) == 1 and [m.text for m in only[0].find_elements(By.TAG_NAME, "mark")] == [
        "harbor",
        "street",
    ]
    plain = _search(browser, url, "quartz", "off")
    assert browser.find_elements(By.CSS_SELECTOR, ".ocr-hit") == []
    assert [int(c.get_attribute("data-id")) for c in plain] == [
        h.id for h in index.search("quartz", k=24, ocr="off")
    ]
