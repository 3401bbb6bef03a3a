"""Model builders: plain functions from an input shape to an uncompiled Keras model."""

from __future__ import annotations


def compact_cnn(input_shape=(64, 64, 1), widths=(16, 32, 64), dense_units=64, dropout=0.4, l2=1e-4,
                pooled_dropout=0.0, pool_last_block=False):
    """Six 3x3 conv layers in three blocks, two dense layers, sigmoid output.

    The shape follows the study that found 6 conv + 2 dense, ReLU, sigmoid and Adam best at 64x64.
    Only Conv/BatchNorm/ReLU/MaxPool/GlobalAveragePooling/Dense are used: each folds or quantizes
    cleanly to int8 in TFLite and ONNX. Global average pooling (instead of flattening) keeps the
    parameter count small and makes the net less sensitive to where in the frame the lungs are.

    The last block is not pooled (a 16x16 map at 64x64) and its pooled features get no dropout
    (`dropout` acts after `fc1` only). With a 0.4 dropout there and an 8x8 map, two thirds of the
    map's spatial variation lay along one channel direction: any read-out, a shuffled head included,
    drew the same heat map, and the map failed the cascading randomisation check. Both changes
    together pass it at two seeds, validation accuracy within a point (research/compact_head_rule.md;
    `pooled_dropout=0.4, pool_last_block=True` rebuilds the earlier net).
    """
    import keras
    from keras import layers, regularizers

    reg = regularizers.L2(l2) if l2 else None
    # BatchNorm momentum 0.9 (Keras default 0.99): with ~125 steps an epoch the slow default leaves
    # the moving statistics stale for the first epochs, and validation then collapses to one class.
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for block, filters in enumerate(widths, start=1):
        for conv in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg,
                              name=f"block{block}_conv{conv}")(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{conv}")(x)
            x = layers.ReLU(name=f"block{block}_relu{conv}")(x)
        if block < len(widths) or pool_last_block:
            x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if pooled_dropout:
        x = layers.Dropout(pooled_dropout, name="dropout1")(x)
    x = layers.Dense(dense_units, activation="relu", kernel_regularizer=reg, name="fc1")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="pneumonia")(x)
    return keras.Model(inputs, outputs, name="compact_cnn")
