"""`edgecxr serve`. Imports only typer at module level (the CLI loads it for every command)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

STATION_MODULES = ("starlette", "uvicorn", "multipart")


def serve(
    model: Path = typer.Argument(..., help="A .tflite or .onnx model with its <model>.json metadata next to it."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on. Any other than loopback needs the access "
                             "token."),
    port: int = typer.Option(8080, min=0, max=65535, help="Port to listen on (0: any free one)."),
    data_dir: Path = typer.Option(Path("edgecxr-station"), help="Folder of the results log (SQLite) and of kept "
                                  "images."),
    no_heatmap: bool = typer.Option(False, "--no-heatmap", help="Show no heat map."),
    heatmap_method: str = typer.Option("auto", "--heatmap-method", help="cam: from the answer's own inference; "
                                       "occlusion: about 225 inferences a film; auto: cam where the model "
                                       "exports its feature map."),
    keep_images: bool = typer.Option(False, "--keep-images", help="Keep uploaded images in DATA_DIR/images/ (named by sha256)."),
    token_file: Optional[Path] = typer.Option(None, help="Read the access token from this file (first line) "
                                              "instead of generating one."),
    max_upload_mb: int = typer.Option(40, min=1, max=1024, help="Largest accepted file, in MB."),
    max_files: int = typer.Option(20, min=1, max=1000, help="Most files in one upload."),
    threads: Optional[int] = typer.Option(None, min=1, help="Interpreter threads (default: the runtime's "
                                          "choice)."),
    behind_proxy: bool = typer.Option(False, "--behind-proxy", help="A reverse proxy (TLS) forwards to this "
                                      "station: require the access token even on loopback."),
):
    """Serve the clinic station: a web page to upload X-rays (JPEG, PNG, DICOM) and see each result,
    its probability, the input gate's and site monitor's messages and a heat map, with a log of every
    result (SQLite, CSV export) and the model card. Works with no internet."""
    from ..extras import require_extra

    require_extra("serve", "station", STATION_MODULES)
    from .server import run

    run(model, host=host, port=port, data_dir=data_dir, keep_images=keep_images, token_file=token_file,
        max_file_bytes=max_upload_mb * 1024 * 1024, max_files=max_files, threads=threads, heatmaps=None if no_heatmap else heatmap_method,
        behind_proxy=behind_proxy)
