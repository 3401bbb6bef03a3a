"""Run the `edgecxr` CLI in-process, as a user would from the shell, and keep what it printed."""

from __future__ import annotations

import sys

import pytest

from edgecxr.cli import main


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `edgecxr ARGS...`."""
    monkeypatch.setattr(sys, "argv", ["edgecxr", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return exit_info.value.code or 0, out, err
