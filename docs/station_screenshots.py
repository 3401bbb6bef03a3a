"""Screenshots of the station's page for docs/station.md, taken in Debian's headless Chromium.

    .venv/bin/python docs/station_screenshots.py runs/lite0/export/model_int8.tflite \
        --data ../shared/data/chest_xray --out docs/img

Serves MODEL with a fresh log, uploads two test/ films and a photo, and saves the page on a laptop
and a phone screen and with the model card open.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from station_helpers import chromium, colour_photo_jpeg  # noqa: E402

from edgecxr.benchmarks.measure.station_load import start_server, stop_server  # noqa: E402


def wait(driver, script: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not driver.execute_script(script):
        if time.monotonic() > deadline:
            raise TimeoutError(script)
        time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="station-shots-"))
    films = [sorted((options.data / "test" / label).glob("*.jpeg"))[3] for label in ("PNEUMONIA", "NORMAL")]
    photo = work / "holiday-photo.jpeg"
    photo.write_bytes(colour_photo_jpeg())
    process, base, _ = start_server(options.model, work / "station")
    options.out.mkdir(parents=True, exist_ok=True)
    try:
        driver = chromium(work / "downloads", work / "profile", 1280, 2300)
        try:
            driver.get(base + "/")
            wait(driver, "return document.querySelector('#model-line').textContent.length > 0")
            driver.find_element("id", "reference").send_keys("ward 3, bed 12")
            driver.find_element("id", "files").send_keys("\n".join(str(p.resolve()) for p in [*films, photo]))
            wait(driver, "return document.querySelectorAll('.result-card').length == 3 && "
                         "document.querySelector('#status').textContent.startsWith('done')")
            wait(driver, "return document.querySelectorAll('#today tbody tr').length == 3")
            driver.save_screenshot(str(options.out / "station-laptop.png"))
            driver.find_element("id", "card-button").click()
            wait(driver, "return document.querySelector('dialog#card dl') !== null")
            driver.set_window_size(1280, 900)
            driver.save_screenshot(str(options.out / "station-model-card.png"))
        finally:
            driver.quit()
        phone = chromium(work / "downloads", work / "profile-phone", 412, 1100)
        try:
            phone.get(base + "/")
            phone.find_element("id", "files").send_keys(str(films[0].resolve()))
            wait(phone, "return document.querySelectorAll('.result-card').length == 1 && "
                        "document.querySelector('#status').textContent.startsWith('done')")
            phone.save_screenshot(str(options.out / "station-phone.png"))
        finally:
            phone.quit()
    finally:
        stop_server(process)
    print(f"screenshots in {options.out}")


if __name__ == "__main__":
    main()
