"""The station's page in a real headless Chromium (Debian's, with its chromedriver; nothing is
downloaded): upload films and see the result and heat map, see refusals, export the log as CSV,
open the model card, and need the token off loopback."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest
from station_helpers import (CHROMEDRIVER, CHROMIUM, chromium, colour_photo_jpeg, host_address, station_model,
                             xray_paths)

from edgecxr.benchmarks.measure.station_load import start_server, stop_server

LABELS = {"NORMAL", "PNEUMONIA"}
WAIT = 120


@pytest.fixture(scope="module")
def model(tiny_run, xray_pool) -> Path:
    return station_model(tiny_run, xray_pool)


@pytest.fixture(scope="module")
def station(model, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("browser_station")
    process, base, _ = start_server(model, data_dir)
    yield base
    stop_server(process)


@pytest.fixture()
def browser(tmp_path):
    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), (
        "Debian's chromium and chromium-driver are needed (make test installs them)")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = chromium(downloads, tmp_path / "profile")
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait_for(driver, css: str, count: int = 1) -> list:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, css)) >= count)
    return driver.find_elements(By.CSS_SELECTOR, css)


def upload(driver, *paths: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "files").send_keys("\n".join(str(p.resolve()) for p in paths))


def card_for(driver, name: str):
    from selenium.webdriver.support.ui import WebDriverWait

    def find(d):
        for card in d.find_elements("css selector", ".result-card"):
            if card.find_element("css selector", "h3").text.startswith(name):
                return card
        return False

    return WebDriverWait(driver, WAIT).until(find)


def loaded(driver, image) -> bool:
    return bool(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image))


def test_a_real_xray_shows_its_result_bar_messages_and_heat_map(browser, station, xray_pool):
    path = xray_paths(xray_pool, 1)[0]
    browser.get(station + "/")
    wait_for(browser, "#model-line:not(:empty)")
    browser.find_element("id", "reference").send_keys("ward 3 bed 12")
    upload(browser, path)
    card = card_for(browser, path.name)
    assert card.get_attribute("data-result") in LABELS
    assert card.find_element("css selector", ".verdict").text in LABELS
    assert loaded(browser, card.find_element("css selector", "img.film"))
    assert loaded(browser, card.find_element("css selector", "img.heatmap")), "no heat map on the page"
    assert "against the threshold" in card.find_element("css selector", ".probability").text
    fill = card.find_element("css selector", ".bar .fill").get_attribute("style")
    assert "width" in fill
    assert "accepted" in card.find_element("css selector", ".gate").text
    assert "site monitor" in card.find_element("css selector", ".monitor").text
    rows = wait_for(browser, "#today tbody tr")
    assert any("ward 3 bed 12" in row.text and path.name in row.text for row in rows)


def test_a_non_image_and_a_photo_are_refused_in_one_line(browser, station, tmp_path):
    text = tmp_path / "letter.pdf"
    text.write_bytes(b"%PDF-1.4 not really\n")
    photo = tmp_path / "holiday.jpeg"
    photo.write_bytes(colour_photo_jpeg())
    browser.get(station + "/")
    upload(browser, text, photo)
    bad = card_for(browser, "letter.pdf")
    assert bad.find_element("css selector", ".verdict").text == "unreadable file"
    error = bad.find_element("css selector", ".message.error").text
    assert error and "\n" not in error and "Traceback" not in error
    refused = card_for(browser, "holiday.jpeg")
    assert refused.find_element("css selector", ".verdict").text == "not a chest X-ray"
    assert not refused.find_elements("css selector", ".bar"), "a refused photo must show no probability"
    assert refused.find_element("css selector", ".gate").text.startswith("input gate: ")


def test_the_csv_export_holds_the_uploads(browser, station, xray_pool):
    paths = xray_paths(xray_pool, 3)[1:]
    browser.get(station + "/")
    browser.find_element("id", "reference").send_keys("csv-check")
    upload(browser, *paths)
    for path in paths:
        card_for(browser, path.name)
    browser.find_element("id", "export-link").click()
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        done = [p for p in browser.downloads.glob("*.csv")]
        if done:
            break
        time.sleep(0.2)
    (exported,) = done
    rows = list(csv.DictReader(io.StringIO(exported.read_text(encoding="utf-8"))))
    mine = [r for r in rows if r["reference"] == "csv-check"]
    assert sorted(r["file_name"] for r in mine) == sorted(p.name for p in paths)
    assert all(r["result"] in LABELS and r["model_sha256"] and r["image_sha256"] for r in mine)


def test_the_model_card_opens_at_a_click(browser, station, model):
    from edgecxr.edge_runtime.metadata import read_metadata

    browser.get(station + "/")
    wait_for(browser, "#model-line:not(:empty)")
    browser.find_element("id", "card-button").click()
    dialog = wait_for(browser, "dialog#card[open] dl")[0]
    text = dialog.text
    assert "not a diagnosis" in text and read_metadata(model).sha256 in text
    assert "edgecxr version" in text and "Threshold" in text


def test_off_loopback_the_page_needs_the_token(browser, model, tmp_path, xray_pool):
    host = host_address() or "0.0.0.0"
    process, base, printed = start_server(model, tmp_path / "station", host=host)
    try:
        token = printed.split("?token=")[1].split()[0]
        browser.get(base + "/")
        assert "access token required" in browser.find_element("tag name", "body").text
        assert not browser.find_elements("id", "files")
        browser.get(base + "/?token=" + token)
        wait_for(browser, "#model-line:not(:empty)")
        assert "token" not in browser.current_url  # traded for a cookie, gone from the address bar
        path = xray_paths(xray_pool, 1)[0]
        upload(browser, path)
        assert card_for(browser, path.name).get_attribute("data-result") in LABELS
    finally:
        stop_server(process)


def test_a_dicom_film_is_shown_with_its_result_and_heat_map(browser, station, xray_pool, tmp_path):
    from station_helpers import dicom_film

    dicom = dicom_film(xray_paths(xray_pool, 4)[3], tmp_path / "IM0001.dcm")
    browser.get(station + "/")
    upload(browser, dicom)
    card = card_for(browser, "IM0001.dcm")
    assert card.get_attribute("data-result") in LABELS
    assert loaded(browser, card.find_element("css selector", "img.film"))
    assert loaded(browser, card.find_element("css selector", "img.heatmap"))
