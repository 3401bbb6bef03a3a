"""Quantization-aware fine-tuning of a transfer model's top, against the real int8 bottom.

Why: post-training int8 drift in EfficientNet-Lite0 is spread over the whole network (see
benchmarks/int8_fidelity_probe.py), so no layer can be exempted; the model itself has to become
less sensitive to int8 rounding. tensorflow-model-optimization has no Keras 3 support, so this
simulates int8 with TensorFlow's fake-quantization ops directly.

How, and why this way on a 2-core CPU: the run's fine-tuning cut splits the model into a frozen
bottom and a trainable top. The bottom is converted to int8 TFLite exactly as `edgecxr convert`
would (same quantizer settings, same calibration images), so the top trains on the activations
the Pi will really compute, next to the float bottom's. The top is run twice per batch on shared
weights: in float, and with int8 simulated (BatchNorm folded into each convolution, per-channel
symmetric weights, per-tensor activation ranges calibrated like the TFLite converter's). The loss
is the usual weighted cross-entropy of both outputs plus `consistency` times the mean squared
difference of their logits: the agreement between the int8 and the float model is what must hold.

The result is a plain float model (the fake-quantization lives only in the training graph); it is
converted, verified and benchmarked like any other run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecxr.edge_runtime.console import console, progress_bar

from .batchnorm_folding import folded_kernel_and_bias, folded_pairs, producer

# TFLite's int8 logistic output: scale 1/256, zero point -128, i.e. [0, 255/256].
SIGMOID_OUTPUT_RANGE = (0.0, 255.0 / 256.0)


@dataclass
class QatConfig:
    epochs: int = 4
    learning_rate: float = 1e-5
    consistency: float = 10.0
    batch_size: int = 32
    augment_passes: int = 2
    # The same calibration images `edgecxr convert --calibration-size 1000` picks (its --seed default).
    calibration_size: int = 1000
    calibration_seed: int = 42


def quantized_outputs(model) -> list[str]:
    """Names of the layers whose outputs TFLite stores as int8 tensors in the top.

    A convolution's output is quantized after its BatchNorm, or after the ReLU when one follows
    (TFLite fuses it); adds, pooling and the dense logits are quantized too.
    """
    import keras

    feeds_activation = {producer(layer.input).name for layer in model.layers
                        if isinstance(layer, keras.layers.ReLU)}
    names = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.ReLU, keras.layers.Add, keras.layers.GlobalAveragePooling2D)):
            names.append(layer.name)
        elif isinstance(layer, keras.layers.BatchNormalization) and layer.name not in feeds_activation:
            names.append(layer.name)
    return names


def _per_channel_int8(kernel, axis_shape):
    """Symmetric per-output-channel int8 weights ([-127, 127]), straight-through gradient."""
    import tensorflow as tf

    flat = tf.reshape(kernel, (-1, axis_shape))
    bound = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(flat), axis=0), 1e-8))
    quantized = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        flat, -bound, bound, num_bits=8, narrow_range=True)
    return tf.reshape(quantized, tf.shape(kernel))


def _layers():
    """The simulation layers, defined lazily so importing this module does not import Keras."""
    import keras
    import tensorflow as tf

    class FakeQuant(keras.layers.Layer):
        def __init__(self, low: float, high: float, **kwargs):
            super().__init__(**kwargs)
            self.low, self.high = float(low), float(high)

        def call(self, x):
            return tf.quantization.fake_quant_with_min_max_args(x, self.low, self.high, num_bits=8)

    class FoldedConv(keras.layers.Layer):
        """Convolution + inference-mode BatchNorm as TFLite runs it: one conv with folded weights."""

        def __init__(self, conv, bn, quantize: bool, **kwargs):
            super().__init__(**kwargs)
            self.conv, self.bn, self.quantize = conv, bn, quantize

        def call(self, x):
            kernel, bias = folded_kernel_and_bias(self.conv, self.bn)
            depthwise = self.conv.__class__.__name__ == "DepthwiseConv2D"
            channels = kernel.shape[2] * kernel.shape[3] if depthwise else kernel.shape[3]
            if self.quantize:
                if depthwise:  # TFLite quantizes depthwise weights per output channel (in * multiplier)
                    kernel = tf.reshape(_per_channel_int8(
                        tf.reshape(kernel, (*kernel.shape[:2], channels)), channels), kernel.shape)
                else:
                    kernel = _per_channel_int8(kernel, channels)
            strides = (1, *self.conv.strides, 1)
            padding = self.conv.padding.upper()
            if depthwise:
                y = tf.nn.depthwise_conv2d(x, kernel, strides, padding)
            else:
                y = tf.nn.conv2d(x, kernel, strides, padding)
            return y + bias

    class DenseLogit(keras.layers.Layer):
        """The sigmoid head's logit (the dense layer without its activation), optionally int8 weights."""

        def __init__(self, dense, quantize: bool, **kwargs):
            super().__init__(**kwargs)
            self.dense, self.quantize = dense, quantize

        def call(self, x):
            kernel = tf.convert_to_tensor(self.dense.kernel)
            if self.quantize:
                kernel = _per_channel_int8(kernel, kernel.shape[-1])
            return tf.matmul(x, kernel) + self.dense.bias

    return FakeQuant, FoldedConv, DenseLogit


def logit_model(top, ranges: dict[str, tuple[float, float]] | None = None, with_activations: bool = False):
    """top (cut activations -> probability) rebuilt to output the logit, int8 simulated when `ranges` is given.

    Shares every weight with `top`. `ranges` maps quantized_outputs(top) names (and "logit") to (min, max).
    With `with_activations` the model outputs [logit, *the quantized_outputs tensors] (for calibration).
    """
    import keras

    FakeQuant, FoldedConv, DenseLogit = _layers()
    pairs = folded_pairs(top)
    folded_bn = {bn.name for bn in pairs.values()}
    watched = set(quantized_outputs(top))
    quantize = ranges is not None
    activations = {}

    def call(layer, *args, **kwargs):
        if layer.name in pairs:
            out = FoldedConv(layer, pairs[layer.name], quantize, name=f"{layer.name}_folded")(args[0])
        elif layer.name in folded_bn:
            out = args[0]
        elif isinstance(layer, keras.layers.Dense):
            out = DenseLogit(layer, quantize, name=f"{layer.name}_logit")(args[0])
        else:
            out = layer(*args, **kwargs)
        key = "logit" if isinstance(layer, keras.layers.Dense) else layer.name
        if quantize and key in ranges:
            out = FakeQuant(*ranges[key], name=f"{key}_fake_quant")(out)
        if key in watched:
            activations[key] = out
        return out

    rebuilt = keras.models.clone_model(top, clone_function=lambda layer: layer, call_function=call)
    if not with_activations:
        return rebuilt
    names = [name for name in quantized_outputs(top) if name in activations]
    return keras.Model(rebuilt.input, [rebuilt.output, *(activations[n] for n in names)]), names


def calibrate_ranges(top, cut_inputs: np.ndarray, batch_size: int = 64) -> dict[str, tuple[float, float]]:
    """Per-tensor (min, max) over the calibration activations, widened to include 0 as TFLite does."""
    probe, names = logit_model(top, with_activations=True)
    names = ["logit", *names]
    low = {n: 0.0 for n in names}
    high = dict(low)
    for start in range(0, len(cut_inputs), batch_size):
        outputs = probe(cut_inputs[start:start + batch_size], training=False)
        for name, value in zip(names, outputs):
            value = np.asarray(value)
            low[name], high[name] = min(low[name], float(value.min())), max(high[name], float(value.max()))
    return {n: (low[n], high[n]) for n in names}


def int8_tflite(model, calibration_inputs: np.ndarray) -> bytes:
    """`model` as full-integer TFLite, quantized exactly as `edgecxr convert` quantizes a run's model."""
    import warnings

    import tensorflow as tf

    from edgecxr.convert.tflite_export import configure_tflite_quantization

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    configure_tflite_quantization(converter, "int8", calibration_inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


class Int8Runner:
    """Float inputs in, dequantized float outputs out, through a LiteRT interpreter (batched)."""

    def __init__(self, model_bytes: bytes, threads: int = 2):
        from edgecxr.edge_runtime.backends import tflite_interpreter_class

        interpreter_class, _ = tflite_interpreter_class()
        self.interpreter = interpreter_class(model_content=model_bytes, num_threads=threads)
        self.batch = None

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        interpreter = self.interpreter
        source = interpreter.get_input_details()[0]
        if self.batch != len(inputs):
            interpreter.resize_tensor_input(source["index"], [len(inputs), *inputs.shape[1:]])
            interpreter.allocate_tensors()
            self.batch = len(inputs)
            source = interpreter.get_input_details()[0]
        target = interpreter.get_output_details()[0]
        scale, zero = source["quantization"]
        quantized = np.clip(np.round(inputs / scale + zero), -128, 127).astype(np.int8)
        interpreter.set_tensor(source["index"], quantized)
        interpreter.invoke()
        scale, zero = target["quantization"]
        return (interpreter.get_tensor(target["index"]).astype(np.float32) - zero) * scale


def paired_activations(bottom, runner: Int8Runner, pixels: np.ndarray, spec, augment=None, seed=(0, 0),
                       description: str = "bottom activations", batch_size: int = 64):
    """(float bottom, int8 bottom) activations of the same (optionally augmented) inputs."""
    from .transfer_training import batch_seed, input_preparation

    prepare = input_preparation(spec, augment)
    floats, int8s = [], []
    with progress_bar(transient=True) as progress:
        task = progress.add_task(description, total=len(pixels))
        for index, start in enumerate(range(0, len(pixels), batch_size)):
            inputs = prepare(pixels[start:start + batch_size], batch_seed(seed, index))
            floats.append(np.asarray(bottom(inputs, training=False)))
            int8s.append(runner(np.asarray(inputs)))
            progress.advance(task, len(inputs))
    return np.concatenate(floats), np.concatenate(int8s)


def fit_consistent(top, ranges, passes, labels, weights, validation, config: QatConfig,
                   label_smoothing: float, seed: int) -> dict:
    """Train top's convolution and dense weights on both paths; returns the per-epoch history."""
    import keras
    import tensorflow as tf

    float_logit, int8_logit = logit_model(top), logit_model(top, ranges)
    trainable = [w for layer in top.layers
                 if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense))
                 for w in layer.trainable_weights]
    optimizer = keras.optimizers.Adam(config.learning_rate)
    targets_of = lambda y: y * (1.0 - label_smoothing) + 0.5 * label_smoothing  # noqa: E731

    def cross_entropy(y, logits, w):
        per_image = tf.nn.sigmoid_cross_entropy_with_logits(targets_of(y), logits[:, 0])
        return tf.reduce_sum(per_image * w) / tf.reduce_sum(w)

    @tf.function(reduce_retracing=True)
    def step(xf, xq, y, w):
        with tf.GradientTape() as tape:
            zf, zq = float_logit(xf, training=False), int8_logit(xq, training=False)
            ce = cross_entropy(y, zf, w) + cross_entropy(y, zq, w)
            gap = tf.reduce_sum(tf.square(zq[:, 0] - zf[:, 0]) * w) / tf.reduce_sum(w)
            loss = ce + config.consistency * gap
        optimizer.apply_gradients(zip(tape.gradient(loss, trainable), trainable))
        return ce, gap

    def evaluate(split):
        (xf, xq), y = split
        zf = np.concatenate([np.asarray(float_logit(xf[i:i + 128], training=False)) for i in range(0, len(y), 128)])
        zq = np.concatenate([np.asarray(int8_logit(xq[i:i + 128], training=False)) for i in range(0, len(y), 128)])
        ones = tf.ones(len(y))
        return {"ce": float(cross_entropy(y.astype(np.float32), zf, ones)),
                "gap": float(np.mean((zq - zf) ** 2)),
                "mean_abs_dp": float(np.mean(np.abs(tf.sigmoid(zq) - tf.sigmoid(zf))))}

    rng = np.random.default_rng(seed)
    history = {"loss_ce": [], "loss_gap": [], "val_ce": [], "val_gap": [], "val_mean_abs_dp": []}
    start = evaluate(validation)
    console.print(f"before: validation cross-entropy {start['ce']:.4f}, logit gap {start['gap']:.5f}, "
                  f"mean |dp| float vs simulated int8 {start['mean_abs_dp']:.4f}", highlight=False)
    with progress_bar() as progress:
        task = progress.add_task("quantization-aware epochs", total=config.epochs)
        for epoch in range(config.epochs):
            xf_all, xq_all = passes[epoch % len(passes)]
            order = rng.permutation(len(labels))
            sums = np.zeros(2)
            for begin in range(0, len(order), config.batch_size):
                rows = np.sort(order[begin:begin + config.batch_size])
                ce, gap = step(xf_all[rows], xq_all[rows], labels[rows].astype(np.float32), weights[rows])
                sums += (float(ce), float(gap))
            batches = -(-len(order) // config.batch_size)
            scores = evaluate(validation)
            history["loss_ce"].append(sums[0] / batches)
            history["loss_gap"].append(sums[1] / batches)
            for key, value in scores.items():
                history[f"val_{key}"].append(value)
            console.print(f"epoch {epoch + 1}: train ce {sums[0] / batches:.4f} gap {sums[1] / batches:.5f}; "
                          f"validation ce {scores['ce']:.4f} gap {scores['gap']:.5f} "
                          f"mean |dp| {scores['mean_abs_dp']:.4f}", highlight=False)
            progress.advance(task)
    return {"before": start, **history}
