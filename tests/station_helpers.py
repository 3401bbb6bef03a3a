"""What the station's tests share: the served model, real images, a non-X-ray photo, the host's address."""

from __future__ import annotations

import io
import socket
from pathlib import Path

from PIL import Image

from edge_artifacts import gated_artifacts


def station_model(tiny_run: Path, xray_pool: Path) -> Path:
    """The tiny run's int8 TFLite model with a calibrated input gate: what a clinic would serve."""
    return gated_artifacts(tiny_run, xray_pool)["int8.tflite"]


def colour_photo_jpeg() -> bytes:
    """A real photograph (scikit-image's bundled astronaut): not a chest X-ray."""
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def xray_paths(xray_pool: Path, count: int) -> list[Path]:
    return sorted((xray_pool / "held_out").iterdir())[:count]


def host_address() -> str | None:
    """This machine's own non-loopback IPv4 address (bindable here, not 127.x), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = probe.getsockname()[0]
    except OSError:
        return None
    if address.startswith("127.") or address == "0.0.0.0":
        return None
    return address


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium(download_dir: Path, user_data_dir: Path, width: int = 1280, height: int = 1000):
    """Debian's headless Chromium through its own chromedriver (nothing downloaded), fresh profile,
    downloads into `download_dir`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                     f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver


def dicom_film(jpeg: Path, target: Path) -> Path:
    """A real X-ray written as a 12-bit DX DICOM file (pydicom), as a clinic's modality sends it."""
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = (np.asarray(Image.open(jpeg).convert("L"), dtype=np.uint16) * 16)  # 8 -> 12 bits
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(target), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.BodyPartExamined, ds.PatientID = "DX", "CHEST", "TEST"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(str(target), enforce_file_format=True)
    return target
