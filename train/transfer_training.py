"""Training strategies for ImageNet backbones: feature extraction, and two-phase fine-tuning.

Both strategies split the model at a cut point. Everything below the cut is frozen and, with its
BatchNorm layers in inference mode, a deterministic function of the pixels; so its activations are
computed once per augmented pass of the training set and cached, and the epochs only run the part
above the cut. On a CPU this is the difference between hours and minutes. Augmentation is applied
to the pixels before the cut: each of `augment_passes` passes sees a different random augmentation
of every image, and epoch e trains on pass e mod augment_passes.

- feature-extract: the cut is the pooled backbone output; only the head (dropout + dense) trains.
- fine-tune: the cut is --fine-tune-from (a layer name or the top fraction of backbone layers).
  Phase 1 trains the head with the whole backbone frozen; phase 2 unfreezes the backbone layers
  above the cut at learning_rate * fine_tune_lr_factor. BatchNorm layers stay frozen (inference
  mode) throughout: small batches would otherwise wreck the ImageNet statistics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edgecxr.edge_runtime.console import console, progress_bar
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.preprocessing import PreprocessSpec, scale_pixels

from .augment import AugmentConfig, augment_batch
from .fitting import batches_per_epoch, best_epoch_index, compile_classifier, fit_callbacks, image_weights
from .hparams import TrainConfig
from .transfer import HEAD_LAYERS

STRATEGIES = ("feature-extract", "fine-tune")
DEFAULT_FINE_TUNE_FRACTION = 0.1


@dataclass
class Cut:
    layer: str  # first layer above the cut ("pool" output for feature extraction)
    bottom: object  # keras.Model: image -> cut activations
    top: object  # keras.Model: cut activations -> P(pneumonia), sharing the full model's layers


def check_options(config: TrainConfig, transfer: bool) -> None:
    if not transfer:
        if config.weights not in (None, "none"):
            raise EdgecxrError(f"--weights applies to ImageNet backbones, not --arch {config.arch}")
        return
    if config.strategy not in STRATEGIES:
        raise EdgecxrError(f"--strategy must be one of {', '.join(STRATEGIES)}, not {config.strategy!r}")
    if config.augment_passes < 1:
        raise EdgecxrError("--augment-passes must be at least 1")


def backbone_layers(model) -> list:
    import keras

    return [layer for layer in model.layers
            if layer.name not in HEAD_LAYERS and not isinstance(layer, keras.layers.InputLayer)]


def _cut_at(model, tensor, layer_name: str) -> Cut:
    import keras

    return Cut(layer_name, keras.Model(model.input, tensor), keras.Model(tensor, model.output))


def _fine_tune_start(layers: list, fine_tune_from: str | None) -> int:
    """Index of the first backbone layer to unfreeze, from a layer name (or name prefix) or a fraction."""
    spec = fine_tune_from if fine_tune_from not in (None, "") else str(DEFAULT_FINE_TUNE_FRACTION)
    try:
        fraction = float(spec)
    except ValueError:
        for index, layer in enumerate(layers):
            if layer.name == spec or layer.name.startswith(spec):
                return index
        examples = ", ".join(layer.name for layer in layers[-40::8])
        raise EdgecxrError(f"--fine-tune-from {spec!r} matches no backbone layer (e.g. {examples}) "
                           "and is not a fraction") from None
    if not 0.0 < fraction <= 1.0:
        raise EdgecxrError(f"--fine-tune-from as a fraction must be in (0, 1], not {fraction}")
    return min(len(layers) - 1, int(round(len(layers) * (1.0 - fraction))))


def find_cut(model, strategy: str, fine_tune_from: str | None = None) -> Cut:
    """The frozen-bottom / trainable-top split for a strategy.

    A fine-tuning cut must be a tensor that alone determines everything above it (no residual
    connection may jump over it); from the requested layer the first such point is used.
    """
    if strategy == "feature-extract":
        return _cut_at(model, model.get_layer("pool").output, "head_dropout")
    layers = backbone_layers(model)
    for layer in layers[_fine_tune_start(layers, fine_tune_from):]:
        if isinstance(layer.input, (list, tuple)):
            continue
        try:
            return _cut_at(model, layer.input, layer.name)
        except ValueError:  # Keras: the graph above this tensor needs another tensor too
            continue
    raise EdgecxrError(f"no usable fine-tuning cut at or above --fine-tune-from {fine_tune_from!r}")


def input_preparation(spec: PreprocessSpec, augment: AugmentConfig | None):
    """(uint8 batch, batch seed) -> scaled model inputs, augmented when asked; a tf.function."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def prepare(batch, batch_seed):
        x = tf.cast(batch, tf.float32)
        if augment is not None:
            # Augment one channel and repeat it: the channels of an X-ray input must stay identical.
            x = tf.repeat(augment_batch(x[..., :1], batch_seed, augment), spec.channels, axis=-1)
        return scale_pixels(x, spec)
    return prepare


def batch_seed(seed: tuple[int, int], index: int):
    """The stateless augmentation seed of batch `index` in pass `seed`: passes repeat exactly."""
    import tensorflow as tf

    return tf.constant([seed[0], seed[1] * 1_000_003 + index], dtype=tf.int64)


def cut_activations(bottom, pixels: np.ndarray, spec: PreprocessSpec, augment: AugmentConfig | None = None,
                    seed: tuple[int, int] = (0, 0), description: str = "backbone features",
                    batch_size: int = 64) -> np.ndarray:
    """Run the frozen bottom (inference mode) over uint8 pixels, augmenting first when asked."""
    import tensorflow as tf

    prepare = input_preparation(spec, augment)

    @tf.function(reduce_retracing=True)
    def forward(batch, seed_tensor):
        return bottom(prepare(batch, seed_tensor), training=False)

    outputs = []
    with progress_bar(transient=True) as progress:
        task = progress.add_task(description, total=len(pixels))
        for index, start in enumerate(range(0, len(pixels), batch_size)):
            outputs.append(forward(pixels[start:start + batch_size], batch_seed(seed, index)).numpy())
            progress.advance(task, len(outputs[-1]))
    return np.concatenate(outputs)


def pass_batches(passes: list[np.ndarray], labels: np.ndarray, sample_weights: np.ndarray, batch_size: int,
                 seed: int):
    """An endless tf.data stream of (features, label, weight) batches, one epoch after another.

    Epoch e is a fresh shuffle of pass e mod len(passes). Fit it with steps_per_epoch = batches per
    epoch, so Keras' epochs line up with the stream's.
    """
    import tensorflow as tf

    steps = batches_per_epoch(len(labels), batch_size)

    def stream():
        rng = np.random.default_rng(seed)
        epoch = 0
        while True:
            order, features = rng.permutation(len(labels)), passes[epoch % len(passes)]
            for index in range(steps):
                rows = np.sort(order[index * batch_size:(index + 1) * batch_size])
                yield features[rows], labels[rows, None].astype(np.float32), sample_weights[rows]
            epoch += 1

    signature = (tf.TensorSpec((None, *passes[0].shape[1:]), tf.float32), tf.TensorSpec((None, 1), tf.float32),
                 tf.TensorSpec((None,), tf.float32))
    return tf.data.Dataset.from_generator(stream, output_signature=signature).prefetch(2)


def _set_trainable(top, head_only: bool, freeze_batchnorm: bool = True) -> int:
    import keras

    for layer in top.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # Keras 3: a frozen BatchNorm also runs in inference mode. Only a backbone trained from
            # scratch (--weights none) has no statistics worth keeping.
            layer.trainable = not (head_only or freeze_batchnorm)
        else:
            layer.trainable = layer.name in HEAD_LAYERS or not head_only
    return int(sum(np.prod(w.shape) for w in top.trainable_weights))


def _fit_phase(top, data, steps: int, validation, epochs: int, learning_rate: float, patience: int,
               label_smoothing: float) -> dict:
    compile_classifier(top, learning_rate, epochs * steps, label_smoothing)
    callbacks = fit_callbacks(epochs, steps, patience)
    history = top.fit(data, steps_per_epoch=steps, validation_data=validation, epochs=epochs, verbose=0,
                      callbacks=callbacks, shuffle=False).history  # the stream shuffles each epoch itself
    return {k: [float(v) for v in values] for k, values in history.items()}


def fit_transfer(model, splits, spec: PreprocessSpec, config: TrainConfig) -> tuple[dict, dict]:
    """Train `model` in place with config.strategy. Returns (history, details for the metadata)."""
    cut = find_cut(model, config.strategy, config.fine_tune_from)
    augment = config.augment if config.augment.enabled else None
    passes_wanted = config.augment_passes if augment is not None else 1
    started = time.perf_counter()
    passes = [cut_activations(cut.bottom, splits.train.pixels, spec, augment, (config.seed, p),
                              f"backbone features, pass {p + 1}/{passes_wanted}") for p in range(passes_wanted)]
    val_features = cut_activations(cut.bottom, splits.val.pixels, spec, description="backbone features, validation")
    feature_seconds = time.perf_counter() - started
    console.print(f"cached activations at {cut.layer} {tuple(passes[0].shape[1:])} for {passes_wanted} pass(es) "
                  f"in {feature_seconds:.0f}s", highlight=False)

    labels = splits.train.labels
    weights = image_weights(labels, config.class_weights)
    data = pass_batches(passes, labels, weights, config.batch_size, config.seed)
    steps = batches_per_epoch(len(labels), config.batch_size)
    validation = (val_features, splits.val.labels[:, None].astype(np.float32))
    head_parameters = _set_trainable(cut.top, head_only=True)
    head_epochs = config.epochs if config.strategy == "feature-extract" else config.head_epochs
    console.print(f"phase 1: head only ({head_parameters} trainable parameters)", highlight=False)
    history = _fit_phase(cut.top, data, steps, validation, head_epochs, config.learning_rate, config.patience,
                         config.label_smoothing)
    head_best_index = best_epoch_index(history["val_loss"], head_epochs)
    details = {
        "strategy": config.strategy, "weights": config.weights or "imagenet", "cut_layer": cut.layer,
        "augment_passes": passes_wanted, "feature_cache_seconds": round(feature_seconds, 1),
        "head_epochs_run": len(history["loss"]), "head_trainable_parameters": head_parameters,
        "best_epoch": head_best_index + 1,  # 1-based over both phases, as the history lists them
    }
    if config.strategy == "fine-tune":
        history = fine_tune_phase(
            cut, config, config.learning_rate, history, head_best_index, cut.top.get_weights(), details,
            lambda rate: _fit_phase(cut.top, data, steps, validation, config.epochs, rate, config.patience,
                                    config.label_smoothing))
    return history, details


def fine_tune_phase(cut, config, base_rate: float, history: dict, head_best_index: int, head_weights,
                    details: dict, fit) -> dict:
    """Phase 2: unfreeze above the cut and train at base_rate x fine_tune_lr_factor with `fit(rate)`
    (which returns that phase's history); keep the head-only weights unless fine-tuning beats them
    on validation loss. Returns both phases' history and records the phase in `details`."""
    head_best = history["val_loss"][head_best_index]
    tuned_parameters = _set_trainable(cut.top, head_only=False,
                                      freeze_batchnorm=(config.weights or "imagenet").lower() != "none")
    rate = base_rate * config.fine_tune_lr_factor
    console.print(f"phase 2: fine-tuning from {cut.layer} at learning rate {rate:g} "
                  f"({tuned_parameters} trainable parameters)", highlight=False)
    tuned = fit(rate)
    tuned_best_index = best_epoch_index(tuned["val_loss"], config.epochs)
    kept_head = tuned["val_loss"][tuned_best_index] > head_best
    if kept_head:
        console.print("fine-tuning did not beat the head alone on validation loss; keeping the head-only weights",
                      highlight=False)
        cut.top.set_weights(head_weights)
    else:
        details["best_epoch"] = len(history["loss"]) + tuned_best_index + 1
    details.update({"fine_tune_epochs_run": len(tuned["loss"]), "fine_tune_learning_rate": rate,
                    "fine_tune_trainable_parameters": tuned_parameters,
                    "kept_head_only_weights": bool(kept_head)})
    return {k: history.get(k, []) + tuned.get(k, []) for k in dict.fromkeys([*history, *tuned])}
