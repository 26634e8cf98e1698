"""The web page in real headless Chromium: type a query, see results, click one to search
by that image, upload an image; a screenshot is saved to build/test-artifacts/."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

import clipforge
from clipforge.serve import ServeConfig, create_app
from tests.conftest import REPO, tiny_model
from tests.index_helpers import write_images

ARTIFACTS = REPO / "build" / "test-artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    write_images(root / "photos", 16)
    index = clipforge.Index.open(root / "db", tiny_model())
    index.sync([root / "photos"])
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


def _cards(browser, status_prefix: str) -> list:
    wait = WebDriverWait(browser, 20)
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), status_prefix))
    return browser.find_elements(By.CSS_SELECTOR, "#grid .card")


def test_page_search_click_and_upload(server, browser):
    index, url = server
    browser.get(url + "/")
    box = browser.find_element(By.ID, "q")
    k = browser.find_element(By.ID, "k")
    k.clear()
    k.send_keys("8")
    box.send_keys("a photo of a dog")
    browser.find_element(By.ID, "go").click()
    cards = _cards(browser, "8 results")
    expected = [h.id for h in index.search("a photo of a dog", k=8)]
    assert [int(c.get_attribute("data-id")) for c in cards] == expected
    WebDriverWait(browser, 20).until(
        lambda b: b.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "search_page.png"))

    cards[3].click()  # find images similar to the fourth result
    similar = _cards(browser, "8 results for images like")
    assert int(similar[0].get_attribute("data-id")) == expected[3]
    assert similar[0].find_element(By.CLASS_NAME, "score").text == "1.000"

    upload = browser.find_element(By.ID, "file")
    path = index.meta.get(expected[5]).path
    upload.send_keys(path)  # the drop zone's file input: same upload path as drag and drop
    uploaded = _cards(browser, "results for image")
    assert int(uploaded[0].get_attribute("data-id")) == expected[5]
    browser.save_screenshot(str(ARTIFACTS / "search_page_upload.png"))
