"""The `edgecxr` command line. Each command lives with its package; heavy imports wait until it runs."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from edgecxr.benchmarks import command as bench_command
from edgecxr.convert import command as convert_command
from edgecxr.edge_runtime import bundle_command
from edgecxr.edge_runtime import command as runtime_command
from edgecxr.edge_runtime.console import console
from edgecxr.edge_runtime.errors import EdgecxrError
from edgecxr.edge_runtime.station import command as station_command
from edgecxr.train import command as train_command


def load_renormaliser():
    """convert's rebuild with re-estimated BatchNorm statistics, for `commission --renormalise` only."""
    from edgecxr.edge_runtime.extras import EXTRA_MODULES, require_extra

    require_extra("commission --renormalise", extra="train", modules=EXTRA_MODULES["convert"])
    from edgecxr.convert.site_reexport import rebuild_renormalised

    return rebuild_renormalised


app = typer.Typer(
    name="edgecxr",
    help="Pediatric chest X-ray (NORMAL vs PNEUMONIA): train, convert, verify, predict and benchmark edge models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
# One line each in `edgecxr --help` (at 80 columns); `edgecxr COMMAND --help` shows the whole docstring.
COMMANDS = (
    ("train", train_command.train, "Train a model and write a run folder."),
    ("evaluate", train_command.evaluate, "Score a run on a labelled folder at its stored threshold."),
    ("convert", convert_command.convert, "Export a run to TFLite and ONNX, each verified."),
    ("predict", runtime_command.predict, "NORMAL or PNEUMONIA, or refuse what is not a chest X-ray."),
    ("commission", runtime_command.make_commission(load_renormaliser),
     "Check a model on a site's films; write a site copy."),
    ("doctor", runtime_command.doctor, "Which runtimes are installed; does a model load and run."),
    ("serve", station_command.serve, "The clinic station: upload films, see results, keep a log."),
    ("bench", bench_command.bench, "Every format side by side with the full Keras model."),
    ("bundle", bundle_command.bundle, "An offline install archive for a Raspberry Pi."),
)
for name, function, summary in COMMANDS:
    app.command(name=name, short_help=summary)(function)


def main() -> None:
    """Entry point: a user error is one red line and exit code 2, never a traceback."""
    try:
        app()
    except (EdgecxrError, OSError) as exc:
        # OSError too: a full disk or an output path under a file is the machine's state, not a
        # bug, and its message names the file.
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        sys.exit(130)


if __name__ == "__main__":
    main()
