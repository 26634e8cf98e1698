"""The web page's photo filters in real headless Chromium: a capture-date range sorted by
date (newest first, then oldest first); screenshots go to build/test-artifacts/."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

import clipforge
from clipforge.index import Filters
from clipforge.serve import ServeConfig, create_app
from tests.conftest import tiny_model
from tests.photo_helpers import Shot, write_photo
from tests.serve.test_serve_browser import ARTIFACTS, _cards

DATES = ["2021:03:01", "2022:06:15", "2022:09:30", "2023:02:14", "2023:08:08", "2024:12:24"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser_photos")
    for seed, day in enumerate(DATES):
        shot = Shot(f"{day} 12:00:00", "+01:00", make="Canon", model="EOS R6", orientation=6)
        write_photo(root / "photos" / f"IMG_{seed}.jpg", shot, seed)
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


def _set_date(driver, element_id: str, iso: str) -> None:
    """Date inputs take typed keys in the locale's order; set the value as a script would."""
    driver.execute_script(
        "document.getElementById(arguments[0]).value = arguments[1]", element_id, iso
    )


def test_page_date_range_sorted_by_date(server, browser):
    index, url = server
    browser.get(url + "/")
    browser.find_element(By.ID, "q").send_keys("a photo")
    _set_date(browser, "after", "2022-06-15")
    _set_date(browser, "before", "2023-08-08")  # inclusive: the whole day
    Select(browser.find_element(By.ID, "sort")).select_by_value("date")
    browser.find_element(By.ID, "go").click()
    cards = _cards(browser, "4 results")
    taken = [c.get_attribute("data-taken") for c in cards]
    assert taken == [
        "2023-08-08T12:00:00+01:00", "2023-02-14T12:00:00+01:00",
        "2022-09-30T12:00:00+01:00", "2022-06-15T12:00:00+01:00",
    ]  # fmt: skip
    filters = Filters(taken_after="2022-06-15", taken_before="2023-08-08", sort="date")
    expected = index.search("a photo", k=24, filters=filters)
    assert [int(c.get_attribute("data-id")) for c in cards] == [h.id for h in expected]
    assert cards[0].find_element(By.CLASS_NAME, "taken").text == "2023-08-08"
    WebDriverWait(browser, 20).until(
        lambda b: b.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    # thumbnails are upright: the stored landscape photos carry orientation 6 (portrait)
    sizes = browser.execute_script(
        "return [...document.images].map(i => [i.naturalWidth, i.naturalHeight])"
    )
    assert all(h > w for w, h in sizes), sizes
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "search_page_photos_by_date.png"))

    Select(browser.find_element(By.ID, "sort")).select_by_value("date-asc")
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 20).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#grid .card")
        and b.find_elements(By.CSS_SELECTOR, "#grid .card")[0].get_attribute("data-taken")
        == "2022-06-15T12:00:00+01:00"
    )
    oldest = [c.get_attribute("data-taken") for c in _cards(browser, "4 results")]
    assert oldest == taken[::-1]
    browser.save_screenshot(str(ARTIFACTS / "search_page_photos_oldest_first.png"))
