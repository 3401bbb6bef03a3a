"""DICOM films built with pydicom from real test/ X-rays decode to the JPEG's own pixels and predictions.

Each film stores the JPEG's gray values in a different way (8/12/16 bits, MONOCHROME1 or 2, with a
window, a VOI LUT table, compression); decoding it must give back what the JPEG shows, so a model
must answer the same on both. A decoder that skipped the window, the LUT or the inversion would
return visibly different pixels.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom", reason="the [dicom] extra is part of `make install`")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import (ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless,  # noqa: E402
                         SecondaryCaptureImageStorage, generate_uid)

from cli_runner import run_cli  # noqa: E402
from edge_artifacts import edge_artifacts  # noqa: E402
from edgecxr.edge_runtime.dicom import is_dicom  # noqa: E402
from edgecxr.edge_runtime.errors import ImageError  # noqa: E402
from edgecxr.edge_runtime.folders import list_images  # noqa: E402
from edgecxr.edge_runtime.images import image_warnings, open_image  # noqa: E402
from edgecxr.edge_runtime.predictor import Predictor  # noqa: E402


@pytest.fixture(scope="module")
def jpegs(data_root) -> list[Path]:
    return [sorted((data_root / "test" / label).iterdir())[0] for label in ("NORMAL", "PNEUMONIA")]


def gray(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def dicom_bytes(stored: np.ndarray, bits: int, photometric: str = "MONOCHROME2", modality: str = "DX",
                syntax=ExplicitVRLittleEndian, frames: int = 1, **tags) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    if syntax == RLELossless:
        ds.compress(RLELossless)  # pydicom's own encoder
    elif syntax == JPEGBaseline8Bit:
        from pydicom.encaps import encapsulate

        buffer = io.BytesIO()
        Image.fromarray(stored.astype(np.uint8)).save(buffer, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def jpeg_lossless_with_gdcm(raw: bytes, tmp_path: Path) -> bytes:
    """Transcode with GDCM, the decoder the [dicom] extra ships (pydicom cannot encode this syntax)."""
    gdcm = pytest.importorskip("gdcm")
    source, target = tmp_path / "raw.dcm", tmp_path / "jpeg_lossless.dcm"
    source.write_bytes(raw)
    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(target))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    return target.read_bytes()


def nonlinear_voi_lut(p: np.ndarray) -> tuple[np.ndarray, Dataset]:
    """12-bit values x = p + p^2 / 20 and the VOI LUT table that maps them back to p."""
    encode = np.arange(256) + np.arange(256) ** 2 // 20
    table = np.zeros(4096, dtype=np.uint16)
    for value in range(256):
        table[encode[value]:] = value
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    item.LUTData = table.tolist()
    item["LUTData"].VR = "US"
    return encode[p], item


# (name, how the JPEG's gray values p are stored, bits, photometric, extra tags, tolerance in gray levels)
def cases(p: np.ndarray) -> list[tuple]:
    p16 = p.astype(np.int64)
    window12 = {"WindowCenter": 1000 + 8 * 127.5 + 0.5, "WindowWidth": 8 * 255 + 1}
    lut_values, lut_item = nonlinear_voi_lut(p16)
    return [
        ("8-bit MONOCHROME2", p16, 8, "MONOCHROME2", {}, 0),
        ("8-bit MONOCHROME1", 255 - p16, 8, "MONOCHROME1", {}, 0),
        # The window maps 1000..3040 onto black..white; without it the film's own min..max would be used.
        ("12-bit MONOCHROME2, window", 1000 + 8 * p16, 12, "MONOCHROME2", window12, 1),
        ("12-bit MONOCHROME1, window", 4095 - (1000 + 8 * p16), 12, "MONOCHROME1",
         {"WindowCenter": 4095 - window12["WindowCenter"] + 1, "WindowWidth": window12["WindowWidth"]}, 1),
        ("16-bit MONOCHROME2, window and rescale", 256 * p16 + 128, 16, "MONOCHROME2",
         {"RescaleSlope": 2, "RescaleIntercept": -1000, "WindowCenter": 2 * (256 * 127.5 + 128) - 1000 + 0.5,
          "WindowWidth": 2 * 256 * 255 + 1}, 1),
        ("12-bit VOI LUT table", lut_values, 12, "MONOCHROME2", {"VOILUTSequence": Sequence([lut_item])}, 0),
    ]


@pytest.mark.parametrize("index", range(6))
def test_stored_values_decode_to_the_jpegs_pixels(jpegs, index):
    for jpeg in jpegs:
        p = gray(jpeg)
        name, stored, bits, photometric, tags, tolerance = cases(p)[index]
        image = open_image(dicom_bytes(stored, bits, photometric, **tags))
        assert image.mode == "L", name
        difference = np.abs(np.asarray(image, dtype=int) - p.astype(int))
        assert difference.max() <= tolerance, f"{name}: {difference.max()} gray levels off"
        assert image_warnings(image) == ()


def test_12_and_16_bit_films_without_a_window_are_stretched_like_16_bit_pngs(jpegs):
    p = gray(jpegs[0]).astype(np.int64)
    stretched = (p - p.min()) * 255.0 / (p.max() - p.min())
    for bits, factor in ((12, 16), (16, 256)):
        decoded = np.asarray(open_image(dicom_bytes(p * factor, bits)), dtype=float)
        assert np.abs(decoded - stretched).max() <= 1.0


def test_compressed_films(jpegs, tmp_path):
    p = gray(jpegs[1])
    window = {"WindowCenter": 1000 + 8 * 127.5 + 0.5, "WindowWidth": 8 * 255 + 1}
    lossless = jpeg_lossless_with_gdcm(dicom_bytes(1000 + 8 * p.astype(np.int64), 12, **window), tmp_path)
    assert pydicom.dcmread(io.BytesIO(lossless)).file_meta.TransferSyntaxUID.name.startswith("JPEG Lossless")
    assert np.abs(np.asarray(open_image(lossless), dtype=int) - p).max() <= 1
    rle = dicom_bytes(p.astype(np.int64) * 16, 12, syntax=RLELossless, **{"WindowCenter": 16 * 127.5 + 0.5,
                                                                          "WindowWidth": 16 * 255 + 1})
    assert np.abs(np.asarray(open_image(rle), dtype=int) - p).max() <= 1
    lossy = np.asarray(open_image(dicom_bytes(p, 8, syntax=JPEGBaseline8Bit)), dtype=int)
    assert np.abs(lossy - p).mean() < 2.0  # re-encoded at quality 95: close, not equal


def test_multi_frame_film_is_refused_with_a_reason(jpegs):
    p = gray(jpegs[0])
    data = dicom_bytes(np.stack([p, p]), 8, frames=2)
    with pytest.raises(ImageError, match="multi-frame DICOM \\(2 frames\\)"):
        open_image(data)


def test_other_modality_decodes_with_a_warning(jpegs):
    image = open_image(dicom_bytes(gray(jpegs[0]), 8, modality="CT", BodyPartExamined="HEAD"))
    assert np.array_equal(np.asarray(image), gray(jpegs[0]))
    warnings = image_warnings(image)
    assert any("modality CT is not a radiograph" in w for w in warnings)
    assert any("body part HEAD" in w for w in warnings)


def test_dicom_is_recognised_by_its_marker_not_its_name(jpegs, tmp_path):
    data = dicom_bytes(gray(jpegs[0]), 8)
    assert is_dicom(data[:132]) and not is_dicom(jpegs[0].read_bytes()[:132])
    (tmp_path / "IM000001").write_bytes(data)  # PACS exports have no suffix
    (tmp_path / "film.dcm").write_bytes(data)
    (tmp_path / "misnamed.png").write_bytes(data)
    (tmp_path / "notes").write_bytes(b"not an image at all" * 10)
    listed = [p.name for p in list_images(tmp_path)]
    assert listed == ["IM000001", "film.dcm", "misnamed.png"]
    for name in listed:
        assert np.array_equal(np.asarray(open_image(tmp_path / name)), gray(jpegs[0]))


def test_without_pydicom_one_line_names_the_extra(jpegs, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)  # what an install without the extra sees
    with pytest.raises(ImageError, match=r"pip install 'edgecxr\[dicom\]'") as info:
        open_image(dicom_bytes(gray(jpegs[0]), 8))
    assert "\n" not in str(info.value)


def test_corrupt_dicom_is_one_clear_line(jpegs):
    data = dicom_bytes(gray(jpegs[0]), 8)
    with pytest.raises(ImageError, match="DICOM") as info:
        open_image(data[:len(data) // 2])
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def models(tiny_run):
    return edge_artifacts(tiny_run)


@pytest.mark.parametrize("artifact", ["int8.tflite", "fp32.onnx"])
def test_prediction_equals_the_jpegs_within_int8_rounding(models, jpegs, tmp_path, artifact):
    predictor = Predictor.open(models[artifact])
    for jpeg in jpegs:
        expected = predictor.predict(jpeg).probability
        for name, stored, bits, photometric, tags, _ in cases(gray(jpeg)):
            result = predictor.predict(dicom_bytes(stored, bits, photometric, **tags))
            assert result.probability == pytest.approx(expected, abs=1 / 256 + 1e-9), name



def test_predict_reports_dicom_warnings_and_refusals_without_failing(models, jpegs, tmp_path, monkeypatch, capsys):
    p = gray(jpegs[0])
    (tmp_path / "ct.dcm").write_bytes(dicom_bytes(p, 8, modality="CT"))
    (tmp_path / "dx.dcm").write_bytes(dicom_bytes(p, 8))
    (tmp_path / "multi.dcm").write_bytes(dicom_bytes(np.stack([p, p]), 8, frames=2))
    code, out, err = run_cli(monkeypatch, capsys, "predict", models["int8.tflite"], tmp_path, "--json")
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    assert code == 1, err  # one unreadable film: skipped, the others answered
    assert rows["ct.dcm"]["label"] in ("NORMAL", "PNEUMONIA")
    assert rows["ct.dcm"]["probability"] == rows["dx.dcm"]["probability"]
    assert any("modality CT" in w for w in rows["ct.dcm"]["warnings"]) and rows["dx.dcm"]["warnings"] == []
    assert rows["multi.dcm"]["label"] is None and "multi-frame" in rows["multi.dcm"]["error"]
    code, out, err = run_cli(monkeypatch, capsys, "predict", models["int8.tflite"], tmp_path / "ct.dcm",
                             "--csv", tmp_path / "out.csv")
    assert code == 0 and "modality CT" in (tmp_path / "out.csv").read_text()
