"""The shared preprocessing definition and its metadata round trip."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgecxr.edge_runtime.errors import MetadataError
from edgecxr.edge_runtime.preprocessing import PreprocessSpec, preprocess, scale_pixels, to_pixels


def test_preprocess_is_to_pixels_then_scale(data_root):
    path = sorted((data_root / "test" / "NORMAL").iterdir())[0]
    spec = PreprocessSpec(height=64, width=48, scale=2 / 255, offset=-1.0)
    pixels = to_pixels(Image.open(path), spec)
    assert pixels.shape == (64, 48, 1) and pixels.dtype == np.uint8
    result = preprocess(path, spec)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, scale_pixels(pixels.astype(np.float32), spec))
    assert result.min() >= -1.0 and result.max() <= 1.0


def test_histogram_equalisation_makes_exposure_irrelevant(data_root):
    path = sorted((data_root / "test" / "PNEUMONIA").iterdir())[0]
    image = Image.open(path).convert("L")
    darker = image.point(lambda v: v // 2)
    spec = PreprocessSpec()
    a, b = to_pixels(image, spec).astype(int), to_pixels(darker, spec).astype(int)
    assert np.abs(a - b).mean() < 6
    raw = PreprocessSpec(equalize="none")
    assert np.abs(to_pixels(image, raw).astype(int) - to_pixels(darker, raw).astype(int)).mean() > 30


def test_three_channel_spec_repeats_the_grayscale_image(data_root):
    path = sorted((data_root / "test" / "NORMAL").iterdir())[0]
    pixels = to_pixels(Image.open(path), PreprocessSpec(height=32, width=32, channels=3))
    assert pixels.shape == (32, 32, 3)
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_spec_round_trips_and_rejects_nonsense():
    spec = PreprocessSpec(height=96, width=96, channels=3, scale=2 / 255, offset=-1)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(MetadataError):
        PreprocessSpec.from_dict({**spec.to_dict(), "equalize": "clahe-ish"})
    with pytest.raises(MetadataError):
        PreprocessSpec.from_dict({**spec.to_dict(), "mystery": 1})


def test_crop_drops_the_border_before_resizing():
    # A bright 20-pixel frame (a stand-in for markers and collimation edges) around a dark field.
    framed = np.full((200, 200), 255, dtype=np.uint8)
    framed[20:180, 20:180] = 40
    image = Image.fromarray(framed)
    uncropped = to_pixels(image, PreprocessSpec(height=32, width=32, equalize="none"))
    cropped = to_pixels(image, PreprocessSpec(height=32, width=32, equalize="none", crop=0.12))
    assert uncropped.max() == 255
    assert cropped.max() == 40 and cropped.min() == 40


def test_crop_is_recorded_and_old_metadata_means_no_crop():
    spec = PreprocessSpec(crop=0.08)
    assert PreprocessSpec.from_dict(spec.to_dict()).crop == 0.08
    before_crop_existed = {k: v for k, v in spec.to_dict().items() if k != "crop"}
    assert PreprocessSpec.from_dict(before_crop_existed).crop == 0.0
    for nonsense in (-0.1, 0.25, 0.5):
        with pytest.raises(MetadataError, match="crop"):
            PreprocessSpec(crop=nonsense)
