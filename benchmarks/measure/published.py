"""How a measurement lands: its JSON (every number, command, machine and date) and its Markdown
table side by side in the results folder, written atomically, and the table on stdout."""

from __future__ import annotations

from pathlib import Path

from edgecxr.edge_runtime.atomic import write_json_atomic, write_text_atomic


def publish(out: Path, name: str, result: dict, text: str) -> int:
    """Write out/NAME.json and out/NAME.md, print the Markdown; 0, the script's exit code."""
    write_json_atomic(Path(out) / f"{name}.json", result)
    write_text_atomic(Path(out) / f"{name}.md", text)
    print(text)
    return 0
