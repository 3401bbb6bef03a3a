"""EfficientNet-Lite0 and -Lite2 in Keras: the int8-friendly EfficientNet (ReLU6, no squeeze-excite,
fixed stem/head).

Layer names are stable and one-to-one with the PyTorch state dict's modules, so the ImageNet
weights port (lite0_weights.py) can address every layer by name. Stride-2 convolutions use
TensorFlow 'same' padding (more padding after than before when it is uneven): the network was
trained that way in TensorFlow, and the PyTorch reference reproduces it with explicit padding.
"""

from __future__ import annotations

from dataclasses import dataclass

# Official EfficientNet-Lite batch norm settings (TensorFlow semantics: moving = 0.99 old + 0.01 new).
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
# Lite0 was trained on inputs (pixel - 127) / 128, the same scalar for every channel.
INPUT_SCALE = 1.0 / 128.0
INPUT_OFFSET = -127.0 / 128.0
FEATURES = 1280


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# efficientnet_lite_builder.py's block strings for width 1.0 / depth 1.0 (Lite0).
LITE0_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


# Lite2: width 1.1 and depth 1.2 of Lite0, the first and last stages' repeats and the stem and head
# left as they are (the Lite family's rule); read back from the shapes of the shipped state dict.
LITE2_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(3, 3, 2, 6, 16, 24),
    Stage(3, 5, 2, 6, 24, 48),
    Stage(4, 3, 2, 6, 48, 88),
    Stage(4, 5, 1, 6, 88, 120),
    Stage(5, 5, 2, 6, 120, 208),
    Stage(1, 3, 1, 6, 208, 352),
)
STAGES = {"lite0": LITE0_STAGES, "lite2": LITE2_STAGES}


def _mbconv(x, index: int, kernel: int, stride: int, expand: int, filters_in: int, filters_out: int):
    from keras import layers

    name = f"block{index}"
    inputs = x
    if expand != 1:
        x = layers.Conv2D(filters_in * expand, 1, use_bias=False, name=f"{name}_expand_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_expand_relu")(x)
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(filters_out, 1, use_bias=False, name=f"{name}_project_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_project_bn")(x)
    if stride == 1 and filters_in == filters_out:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_lite0(input_shape=(224, 224, 3), include_top: bool = True, classes: int = 1000,
                       dropout: float = 0.2, input_tensor=None):
    """The Lite0 network; without the top it ends at the 1280-channel ReLU6 feature map."""
    return efficientnet_lite("lite0", input_shape, include_top, classes, dropout, input_tensor)


def efficientnet_lite(variant: str, input_shape=(224, 224, 3), include_top: bool = True, classes: int = 1000,
                      dropout: float = 0.2, input_tensor=None):
    """A Lite network by name (`STAGES`); without the top it ends at the 1280-channel feature map."""
    import keras
    from keras import layers

    inputs = input_tensor if input_tensor is not None else keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    index = 0
    for stage in STAGES[variant]:
        for repeat in range(stage.repeats):
            first = repeat == 0
            x = _mbconv(x, index, stage.kernel, stage.stride if first else 1, stage.expand,
                        stage.filters_in if first else stage.filters_out, stage.filters_out)
            index += 1
    x = layers.Conv2D(FEATURES, 1, use_bias=False, name="head_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(dropout, name="top_dropout")(x)
        x = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, x, name=f"efficientnet_{variant}")
