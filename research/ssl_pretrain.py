"""Self-supervised pretraining of the compact net's convolutional trunk on the training split's
films, labels unused (contrastive, two warped views of each film), then the default recipe from
that trunk at three seeds (research/ssl_rule.md).

    python -m research.ssl_pretrain runs/demo --epochs 75
    edgecxr convert research/runs/distil/ssl_s42 --quantize int8 --format tflite   # each seed
    python -m research.distil_study runs/demo runs/lite0 --score --arms baseline ssl \\
        --out research/results/ssl

and, taught from that trunk (research/ssl_teach_rule.md):

    python -m research.ssl_pretrain runs/demo --trunk research/runs/distil/ssl_trunk.weights.h5 \\
        --teachers runs/demo runs/lite0
    python -m research.distil_study runs/demo runs/lite0 --score --arms consistent sslteach \\
        --out research/results/ssl_teach

The fine-tuned runs sit beside the distillation study's same-seed baselines (research/runs/distil/,
ignored by git), which the rule compares them with; the pretraining's record and linear probes go
to research/results/ssl/.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgecxr.edge_runtime.console import console
from edgecxr.train.augment import AugmentConfig

# The two views: the product's jitter, widened as contrastive recipes widen theirs (a crop of half
# to all of the film at a changed aspect, stronger contrast and exposure). No flips: a chest film
# is not left-right symmetric.
VIEWS = AugmentConfig(rotation_degrees=10.0, zoom=0.10, shift=0.10, shear=0.05, brightness=0.15, contrast=0.40,
                      horizontal_flip=False, frame_area=0.5, frame_aspect=0.3, gamma=0.4)
BATCH = 256
TEMPERATURE = 0.2
PROJECTION = (128, 64)
LEARNING_RATE = 1e-3
TRUNK_PREFIX = "block"  # the compact net's conv and BatchNorm layers: block{1,2,3}_{conv,bn}{1,2}


def contrastive_loss(z, temperature: float = TEMPERATURE):
    """NT-Xent over 2B embeddings: rows i and i + B are two views of one film, every other row a negative."""
    import tensorflow as tf

    z = tf.math.l2_normalize(z, axis=1)
    n = tf.shape(z)[0]
    half = n // 2
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    logits = logits - 1e9 * tf.eye(n)  # a view is not its own positive
    positives = tf.concat([tf.range(half, n), tf.range(0, half)], axis=0)
    return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(positives, logits, from_logits=True))


def trunk_of(model):
    import keras

    return keras.Model(model.input, model.get_layer("pool").output, name="trunk")


def pretrain(pixels: np.ndarray, spec, seed: int, epochs: int):
    """The compact net (seed `seed`) whose trunk was trained contrastively on `pixels`; its head is
    untouched. Returns (model, per-epoch losses, seconds)."""
    import keras
    import tensorflow as tf

    from edgecxr.edge_runtime.preprocessing import scale_pixels
    from edgecxr.train.augment import augment_batch
    from edgecxr.train.model_specs import get_model_spec

    keras.utils.set_random_seed(seed)
    model = get_model_spec("compact").build(spec.input_shape, seed=seed, weights=None)
    trunk = trunk_of(model)
    projection = keras.Sequential([keras.layers.Dense(PROJECTION[0], activation="relu"),
                                   keras.layers.Dense(PROJECTION[1])], name="projection")
    steps = len(pixels) // BATCH
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, max(1, epochs * steps))
    optimizer = keras.optimizers.Adam(schedule)
    data = (tf.data.Dataset.from_tensor_slices(pixels).shuffle(len(pixels), seed=seed, reshuffle_each_iteration=True)
            .batch(BATCH, drop_remainder=True).prefetch(2))

    @tf.function
    def step(batch, batch_seed):
        images = tf.cast(batch, tf.float32)
        first = augment_batch(images, batch_seed, VIEWS)
        second = augment_batch(images, batch_seed + tf.constant([0, 1], tf.int64), VIEWS)
        views = scale_pixels(tf.concat([first, second], axis=0), spec)
        with tf.GradientTape() as tape:
            loss = contrastive_loss(projection(trunk(views, training=True), training=True))
            total = loss + tf.add_n(trunk.losses) if trunk.losses else loss
        variables = trunk.trainable_variables + projection.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        return loss

    losses, started, counter = [], time.perf_counter(), 0
    for epoch in range(epochs):
        total = 0.0
        for batch in data:
            total += float(step(batch, tf.constant([seed, 2 * counter], tf.int64)))
            counter += 1
        losses.append(total / steps)
        console.print(f"pretraining epoch {epoch + 1}/{epochs}: contrastive loss {losses[-1]:.4f}, "
                      f"{time.perf_counter() - started:.0f} s", highlight=False)
    return model, losses, time.perf_counter() - started


def linear_probe_auc(model, spec, train, val) -> float:
    """Validation AUC of a logistic regression on the trunk's pooled features (a sanity check that
    pretraining learned something the labels care about; not part of the rule)."""
    from edgecxr.edge_runtime.metrics import binary_metrics
    from edgecxr.edge_runtime.preprocessing import scale_pixels

    trunk = trunk_of(model)

    def features(pixels):
        return trunk.predict(scale_pixels(pixels.astype(np.float32), spec), batch_size=256, verbose=0)

    x, xv = features(train.pixels), features(val.pixels)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    x, xv = (x - mean) / std, (xv - mean) / std
    y = train.labels.astype(np.float64)
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(2000):  # plain gradient descent with a small L2: the features are few
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        w -= 0.1 * (x.T @ (p - y) / len(y) + 1e-3 * w)
        b -= 0.1 * float(np.mean(p - y))
    probs = 1.0 / (1.0 + np.exp(-(xv @ w + b)))
    return float(binary_metrics(val.labels, probs, 0.5)["roc_auc"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference_run", type=Path, help="the run whose patient split to use (runs/demo)")
    parser.add_argument("--epochs", type=int, default=None, help="pretrain for this many epochs")
    parser.add_argument("--trunk", type=Path, default=None,
                        help="instead of pretraining, start from this saved pretrained net (ssl_trunk.weights.h5)")
    parser.add_argument("--teachers", type=Path, nargs="*", default=[],
                        help="fine-tune on these runs' answers on consistent views (research/ssl_teach_rule.md)")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="*", default=[42, 43, 44])
    parser.add_argument("--pretrain-seed", type=int, default=42)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--runs", type=Path, default=Path("research/runs/distil"))
    parser.add_argument("--out", type=Path, default=Path("research/results/ssl"))
    args = parser.parse_args(argv)
    if (args.epochs is None) == (args.trunk is None):
        parser.error("give --epochs (pretrain) or --trunk (a saved pretrained net), not both")

    from edgecxr.benchmarks.machine import machine_info
    from edgecxr.edge_runtime.atomic import write_json_atomic
    from edgecxr.edge_runtime.data_location import resolve_data_dir
    from edgecxr.edge_runtime.errors import EdgecxrError
    from edgecxr.edge_runtime.folders import LabelledImage
    from edgecxr.edge_runtime.run_folder import SPLIT_FILE, RunFolder
    from edgecxr.train.augment import NO_AUGMENTATION
    from edgecxr.train.hparams import TrainConfig
    from edgecxr.train.inputs import load_splits
    from edgecxr.train.model_specs import get_model_spec

    from .distil_study import ARMS, consistent_views, run_name, train_arm

    reference = RunFolder.open(args.reference_run)
    split_seed = reference.metadata.details["training"]["config"]["seed"]
    config = TrainConfig(data=resolve_data_dir(args.data), out=args.runs, arch="compact", seed=split_seed)
    spec = get_model_spec("compact").preprocess_spec(None, config.equalize, config.crop)
    splits = load_splits(config, spec)
    if [str(Path(p).resolve()) for p in splits.val.paths] != [str(s.path) for s in reference.split("validation")]:
        raise EdgecxrError(f"seed {split_seed} does not give {args.reference_run}'s validation patients here")

    args.out.mkdir(parents=True, exist_ok=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    if args.trunk is not None:
        pretrained = get_model_spec("compact").build(spec.input_shape, seed=args.pretrain_seed, weights=None)
        pretrained.load_weights(args.trunk)
        record = {"trunk": str(args.trunk), "teachers": [str(t) for t in args.teachers], "views": args.views,
                  "machine": machine_info()}
    else:
        pretrained, losses, seconds = pretrain(splits.train.pixels, spec, args.pretrain_seed, args.epochs)
        pretrained.save_weights(args.runs / "ssl_trunk.weights.h5")
        random_trunk = get_model_spec("compact").build(spec.input_shape, seed=args.pretrain_seed, weights=None)
        record = {"epochs": args.epochs, "batch": BATCH, "temperature": TEMPERATURE, "projection": list(PROJECTION),
                  "learning_rate": LEARNING_RATE, "views": VIEWS.to_dict(), "pretrain_seed": args.pretrain_seed,
                  "n_films": int(len(splits.train.pixels)), "losses": losses, "seconds": seconds,
                  "linear_probe_val_auc": {"pretrained": linear_probe_auc(pretrained, spec, splits.train, splits.val),
                                           "random_init": linear_probe_auc(random_trunk, spec, splits.train,
                                                                           splits.val)},
                  "machine": machine_info()}
        console.print(f"linear probe, validation AUC: pretrained {record['linear_probe_val_auc']['pretrained']:.4f}, "
                      f"random trunk {record['linear_probe_val_auc']['random_init']:.4f}", highlight=False)

    def from_pretrained(model) -> None:
        copied = [layer.name for layer in model.layers if layer.name.startswith(TRUNK_PREFIX) and layer.weights]
        for name in copied:
            model.get_layer(name).set_weights(pretrained.get_layer(name).get_weights())
        if len(copied) != 12:  # six conv layers and their six BatchNorms
            raise EdgecxrError(f"expected the compact trunk's 12 layers, copied {len(copied)}: {copied}")

    arm = "sslteach" if args.teachers else "ssl"
    samples = [LabelledImage(Path(p), int(label)) for p, label in zip(splits.train.paths, splits.train.labels)]
    record["fine_tuned"] = {}
    for seed in args.seeds:
        name = run_name(arm, seed)
        if args.teachers:  # the consistent-view student's recipe (distil_rule.md's addendum) from the trunk
            pixels, targets = consistent_views(args.teachers, samples, spec, args.views, seed)
            labels, fit_config = np.tile(splits.train.labels, args.views), replace(config, augment=NO_AUGMENTATION)
        else:
            pixels, targets = splits.train.pixels, splits.train.labels.astype(np.float32)
            labels, fit_config = splits.train.labels, config
        metrics = train_arm(splits, spec, replace(fit_config, out=args.runs / name), pixels, targets, labels,
                            ARMS[arm], seed, args.runs / name, reference.path / SPLIT_FILE,
                            initialise=from_pretrained)
        console.print(f"{name}: validation AUC {metrics['roc_auc']:.4f}, accuracy {metrics['accuracy']:.3f}",
                      highlight=False)
        record["fine_tuned"][name] = {k: metrics[k] for k in ("roc_auc", "accuracy", "sensitivity", "specificity")}
    record_file = args.out / ("pretraining.json" if arm == "ssl" else f"{arm}_{'_'.join(map(str, args.seeds))}.json")
    write_json_atomic(record_file, record)
    console.print(f"-> {args.runs}; convert each run, then score with research.distil_study --score --arms "
                  f"baseline {arm}", highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
