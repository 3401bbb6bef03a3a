"""A catalogue of images that are not chest X-rays, for measuring the input gate's refusals.

Built only from what installs with the dev extra, seeded, as PNG bytes (so each goes through the
same decoding as a file): scikit-image's bundled sample photos (colour, their gray versions, and
crops), blank and smooth synthetic frames, 8- and 16-bit noise, text and a form rendered with
Pillow, and real X-rays turned into what a clinic should not send (inverted, rotated 90°).
scikit-learn's digits join when scikit-learn is installed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

# Bundled with scikit-image (no download): photographs, micrographs, scans and drawings.
SKIMAGE_SAMPLES = ("astronaut", "brick", "camera", "cat", "cell", "checkerboard", "clock", "coffee", "coins",
                   "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
                   "microaneurysms", "moon", "page", "retina", "rocket", "text")
PARAGRAPH = ("Patient name: ____________   Date of birth: __/__/____   Ward: ______\n"
             "Referring physician: __________________   Indication: cough, fever\n"
             "The quick brown fox jumps over the lazy dog. 0123456789\n")


@dataclass(frozen=True)
class CatalogueImage:
    category: str
    name: str
    data: bytes  # an encoded image file (PNG)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def skimage_images(rng: np.random.Generator) -> tuple[list[CatalogueImage], str | None]:
    try:
        from skimage import data as samples
    except ImportError:
        return [], "scikit-image is not installed (pip install 'edgecxr[dev]'): its sample photos are left out"
    items = []
    for name in SKIMAGE_SAMPLES:
        array = np.asarray(getattr(samples, name)())
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        image = Image.fromarray(array[..., :3] if array.ndim == 3 else array)
        colour = image.mode == "RGB"
        items.append(CatalogueImage("photograph, colour" if colour else "photograph or scan, gray", name, png(image)))
        if colour:
            items.append(CatalogueImage("colour photograph in gray", f"{name} (gray)", png(image.convert("L"))))
        gray = image.convert("L")
        for index in range(2):  # 1/2..3/4 of each side, somewhere in the picture
            width, height = gray.size
            w, h = int(width * rng.uniform(0.5, 0.75)), int(height * rng.uniform(0.5, 0.75))
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            items.append(CatalogueImage("crop of a photograph, gray", f"{name} crop {index + 1}",
                                        png(gray.crop((x, y, x + w, y + h)))))
    return items, None


def digit_images() -> tuple[list[CatalogueImage], str | None]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return [], "scikit-learn is not installed: its handwritten digits are left out"
    digits = load_digits()
    items = []
    for index in range(0, len(digits.images), 90):  # 20 digits, 8x8 upscaled as a scanner would
        pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)
        image = Image.fromarray(pixels).resize((256, 256), Image.Resampling.NEAREST)
        items.append(CatalogueImage("handwritten digit", f"digit {digits.target[index]} #{index}", png(image)))
    return items, None


def blank_and_smooth_images() -> list[CatalogueImage]:
    ramp = np.tile(np.linspace(0, 255, 512), (512, 1)).astype(np.uint8)
    yy, xx = np.mgrid[-1:1:512j, -1:1:512j]
    radial = (255 * np.clip(1 - np.hypot(xx, yy), 0, 1)).astype(np.uint8)
    return [
        CatalogueImage("blank", "1x1 black PNG", png(Image.new("L", (1, 1), 0))),
        CatalogueImage("blank", "black 512x512", png(Image.new("L", (512, 512), 0))),
        CatalogueImage("blank", "white 512x512", png(Image.new("L", (512, 512), 255))),
        CatalogueImage("blank", "mid-gray 512x512", png(Image.new("L", (512, 512), 128))),
        CatalogueImage("blank", "16-bit constant 300x300",
                       png(Image.fromarray(np.full((300, 300), 1000, dtype=np.uint16)))),
        CatalogueImage("blank", "black RGB 640x480", png(Image.new("RGB", (640, 480), (0, 0, 0)))),
        CatalogueImage("smooth synthetic", "horizontal ramp", png(Image.fromarray(ramp))),
        CatalogueImage("smooth synthetic", "radial gradient", png(Image.fromarray(radial))),
    ]


def noise_images(rng: np.random.Generator) -> list[CatalogueImage]:
    items = []
    for index in range(3):
        uniform = rng.integers(0, 256, (300, 300), dtype=np.uint8)
        items.append(CatalogueImage("noise, 8-bit", f"uniform #{index + 1}", png(Image.fromarray(uniform))))
        gaussian = np.clip(rng.normal(128, 40, (300, 300)), 0, 255).astype(np.uint8)
        items.append(CatalogueImage("noise, 8-bit", f"gaussian #{index + 1}", png(Image.fromarray(gaussian))))
        # Blurred noise is smooth like a film: only the learned check can tell.
        smooth = Image.fromarray(uniform).filter(ImageFilter.GaussianBlur(4 + 2 * index))
        items.append(CatalogueImage("noise, 8-bit", f"blurred uniform #{index + 1}", png(ImageOps.autocontrast(smooth))))
        wide = rng.integers(0, 65536, (300, 300), dtype=np.uint16)
        items.append(CatalogueImage("noise, 16-bit", f"uniform #{index + 1}", png(Image.fromarray(wide))))
        normal16 = np.clip(rng.normal(30000, 8000, (300, 300)), 0, 65535).astype(np.uint16)
        items.append(CatalogueImage("noise, 16-bit", f"gaussian #{index + 1}", png(Image.fromarray(normal16))))
    salt = np.where(rng.random((300, 300)) < 0.5, 0, 255).astype(np.uint8)
    items.append(CatalogueImage("noise, 8-bit", "salt and pepper", png(Image.fromarray(salt))))
    return items


def text_images() -> list[CatalogueImage]:
    items = []
    for size, (ink, paper), name in ((14, (0, 255), "black on white, small"), (28, (0, 255), "black on white, large"),
                                     (20, (255, 0), "white on black"), (20, (40, 200), "gray page")):
        font = ImageFont.load_default(size=size)
        image = Image.new("L", (640, 480), paper)
        draw = ImageDraw.Draw(image)
        for line in range(0, 480 - size, int(size * 1.6)):
            draw.text((20, line), PARAGRAPH.splitlines()[(line // size) % 3], fill=ink, font=font)
        items.append(CatalogueImage("text", name, png(image)))
    form = Image.new("L", (600, 800), 255)
    draw = ImageDraw.Draw(form)
    font = ImageFont.load_default(size=16)
    for row in range(12):
        top = 40 + row * 60
        draw.rectangle((30, top, 570, top + 45), outline=0, width=2)
        draw.text((40, top + 12), f"{row + 1}. {PARAGRAPH.splitlines()[row % 3][:48]}", fill=0, font=font)
    items.append(CatalogueImage("text", "scanned form", png(form.filter(ImageFilter.GaussianBlur(0.7)))))
    return items


def transformed_xrays(paths: list[Path], count: int, rng: np.random.Generator) -> list[CatalogueImage]:
    """`count` inverted and `count` rotated (90° either way) copies of real X-rays from `paths`."""
    chosen = [paths[i] for i in rng.choice(len(paths), size=min(count, len(paths)), replace=False)]
    items = []
    for index, path in enumerate(chosen):
        image = Image.open(path).convert("L")
        items.append(CatalogueImage("inverted X-ray", f"{Path(path).name} inverted", png(ImageOps.invert(image))))
        angle = 90 if index % 2 == 0 else 270
        items.append(CatalogueImage("X-ray rotated 90°", f"{Path(path).name} rotated {angle}",
                                    png(image.rotate(angle, expand=True))))
    return items


def catalogue(xray_paths: list[Path], transformed: int = 100, seed: int = 0) -> tuple[list[CatalogueImage], list[str]]:
    """Every non-X-ray image, and a note for each source that could not be used."""
    rng = np.random.default_rng(seed)
    notes = []
    photos, note = skimage_images(rng)
    notes += [note] if note else []
    digits, note = digit_images()
    notes += [note] if note else []
    items = (photos + digits + blank_and_smooth_images() + noise_images(rng) + text_images()
             + transformed_xrays(xray_paths, transformed, rng))
    return items, notes
