"""edgecxr: pediatric chest X-ray classification from a folder of images to a verified edge model."""

__version__ = "0.1.0"
