"""The reference `edgecxr predict` is held to: what a user would write instead, one film at a time.

PIL decode, grayscale, resize, equalise, int8 quantize, LiteRT invoke: the same model and the same
preprocessing definition written out by hand, with no gate, monitor, metadata check or output.

    python -m edgecxr.benchmarks.measure.bare_loop MODEL.tflite FOLDER   # prints one probability a line
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


def bare_loop(model: Path, films: list[Path]) -> list[float]:
    from ai_edge_litert.interpreter import Interpreter

    spec = json.loads(Path(f"{model}.json").read_text())["preprocessing"]
    interpreter = Interpreter(model_path=str(model), num_threads=1)
    interpreter.allocate_tensors()
    source, = interpreter.get_input_details()
    output = next(o for o in interpreter.get_output_details() if list(o["shape"][1:]) == [1])
    in_scale, in_zero = source["quantization"]
    out_scale, out_zero = output["quantization"]
    probabilities = []
    for film in films:
        with Image.open(film) as image:
            gray = image.convert("L").resize((spec["width"], spec["height"]), Image.Resampling.BILINEAR)
        pixels = np.asarray(ImageOps.equalize(gray), dtype=np.float32) * spec["scale"] + spec["offset"]
        quantized = np.clip(np.round(pixels / in_scale) + in_zero, -128, 127).astype(np.int8)
        interpreter.set_tensor(source["index"], quantized[None, :, :, None])
        interpreter.invoke()
        raw = interpreter.get_tensor(output["index"]).astype(np.float32)
        probabilities.append(float((raw.reshape(-1)[0] - out_zero) * out_scale))
    return probabilities


def main(argv: list[str] | None = None) -> int:
    model, folder = (Path(a) for a in (argv or sys.argv[1:]))
    films = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    for film, probability in zip(films, bare_loop(model, films)):
        print(f"{film}\t{probability:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
