"""The self-supervised study's pieces: the contrastive loss rewards matching two views of one film
over the other films, and pretraining on real (tiny) films moves only the trunk, whose 12 layers
the classifier then takes (research/ssl_rule.md)."""

from __future__ import annotations

import numpy as np

from research.ssl_pretrain import contrastive_loss, pretrain, trunk_of


def test_the_contrastive_loss_is_low_when_each_view_finds_its_twin_and_high_when_it_does_not():
    rng = np.random.default_rng(0)
    films = rng.normal(size=(16, 32)).astype(np.float32)
    twins = np.concatenate([films, films + rng.normal(0, 0.01, films.shape).astype(np.float32)])
    strangers = np.concatenate([films, rng.normal(size=films.shape).astype(np.float32)])
    matched, unmatched = float(contrastive_loss(twins)), float(contrastive_loss(strangers))
    # A view's own copy is excluded: with 31 candidates, chance is ln 31 = 3.43.
    assert matched < 1.0 < np.log(31) - 0.5 < unmatched


def test_pretraining_moves_the_trunk_only_and_lowers_the_loss(tiny_kaggle):
    from edgecxr.edge_runtime.folders import labelled_images
    from edgecxr.train.model_specs import get_model_spec
    from edgecxr.train.pixel_cache import load_pixels

    spec = get_model_spec("compact").preprocess_spec(None, "histogram", 0.0)
    samples = labelled_images(tiny_kaggle / "train")
    pixels = load_pixels(samples, spec, "tiny films").pixels
    pixels = np.concatenate([pixels] * max(1, 520 // len(pixels) + 1))[:520]  # two batches of 256
    import keras

    keras.utils.set_random_seed(42)  # as pretrain() does before it builds: the same starting weights
    untouched = get_model_spec("compact").build(spec.input_shape, seed=42, weights=None)
    model, losses, _ = pretrain(pixels, spec, seed=42, epochs=3)
    assert len(losses) == 3 and losses[-1] < losses[0]
    moved = [layer.name for layer in model.layers if layer.weights and not all(
        np.array_equal(a, b) for a, b in zip(layer.get_weights(), untouched.get_layer(layer.name).get_weights()))]
    assert moved and all(name.startswith("block") for name in moved)  # the head is left as built
    assert trunk_of(model).output.shape[-1] == 64
