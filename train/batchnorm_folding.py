"""Which BatchNormalization layers the int8 converters fold into the convolution before them, and the
folded weights: what int8 quantization actually rounds. Used by bias correction
(convert/bias_correction.py)."""

from __future__ import annotations


def producer(tensor):
    """The layer that produced a Keras tensor."""
    return tensor._keras_history.operation


def folded_pairs(model) -> dict[str, object]:
    """Convolution name -> the BatchNormalization layer that directly follows it (TFLite folds these)."""
    import keras

    pairs = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            source = producer(layer.input)
            if isinstance(source, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
                pairs[source.name] = layer
    return pairs


def folded_kernel_and_bias(conv, bn):
    """Folded kernel and bias, with the BatchNorm in inference mode (it stays frozen)."""
    import tensorflow as tf

    scale = bn.gamma * tf.math.rsqrt(bn.moving_variance + bn.epsilon)
    bias = bn.beta - bn.moving_mean * scale
    kernel = tf.convert_to_tensor(conv.kernel)
    if conv.__class__.__name__ == "DepthwiseConv2D":
        kernel = kernel * tf.reshape(scale, (kernel.shape[2], kernel.shape[3]))
    else:
        kernel = kernel * scale
    return kernel, bias
