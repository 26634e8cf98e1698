"""A video hit in real headless Chromium: the card plays the video from the matching moment
(``#t=SECONDS`` over byte ranges); a screenshot is saved to build/test-artifacts/."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import uvicorn
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import clipforge
from clipforge.serve import ServeConfig, create_app
from tests.conftest import tiny_model
from tests.index_helpers import write_images
from tests.serve.test_serve_browser import ARTIFACTS, _cards
from tests.serve_helpers import free_port
from tests.video_helpers import COLOURS, write_video


@contextmanager
def serving(index) -> Iterator[str]:
    """``serve``'s app under uvicorn on a loopback port, in a thread."""
    port = free_port()
    config = uvicorn.Config(create_app(index, ServeConfig()), host="127.0.0.1", port=port)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_video_hit_opens_at_its_timestamp(tmp_path, browser):
    media = tmp_path / "media"
    write_images(media, 6)
    # VP8 in WebM: open-source Chromium has no H.264 decoder
    starts = write_video(media / "clip.webm", [(c, 15) for c in COLOURS], fps=10)
    index = clipforge.Index.open(tmp_path / "db", tiny_model())
    index.sync([media])
    query = tmp_path / "query.png"
    Image.fromarray(np.full((48, 64, 3), COLOURS[3], np.uint8)).save(query)
    with serving(index) as url:
        browser.get(url + "/")
        browser.find_element(By.ID, "file").send_keys(str(query))
        cards = _cards(browser, "results for image")
        video = cards[0].find_element(By.TAG_NAME, "video")
        expected = index.search(image=query, k=1)[0]
        assert expected.timestamp is not None
        assert abs(expected.timestamp - starts[3]) <= 0.2
        assert video.get_attribute("src").endswith(f"#t={expected.timestamp:.3f}")
        WebDriverWait(browser, 20).until(
            lambda b: b.execute_script("return arguments[0].readyState >= 2", video)
        )
        now = browser.execute_script("return arguments[0].currentTime", video)
        assert abs(now - expected.timestamp) < 0.05
        assert f"@ {expected.timestamp:.1f} s" in cards[0].text
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "search_page_video.png"))
