"""Keep native libraries' own log lines (LiteRT, onnxruntime, TensorFlow at import) off the terminal.

Their C++ code writes straight to file descriptor 2, where no Python setting reaches it, so fd 2 is
pointed at a temporary file for the duration of the call that logs; afterwards the real stderr is
restored and whatever else was written there is passed on without those log lines.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager

# A line of the runtimes' own logging: LiteRT/tflite-runtime's "INFO: ...", "WARNING: ...",
# onnxruntime's "2025-01-01 10:00:00.000 [W:onnxruntime:...] ..." and TensorFlow's absl lines at
# import ("I0000 00:00:1796169054.869646   14294 port.cc:153] oneDNN custom operations are on ...",
# and the CPU-instruction notice that follows one), and the TFLite converter's quantizer settings
# ("fully_quantize: 0, inference_type: 6, ..."). A failure still reaches the user as the Python
# exception that the CLI turns into one error line.
RUNTIME_LOG_LINE = re.compile(
    rb"^(?:(?:VERBOSE|INFO|WARNING|ERROR): |.{0,40}\[[VIWEF]:onnxruntime:|[IWE]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\] "
    rb"|To enable the following instructions:|fully_quantize: )")
_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved: tuple[int, object] | None = None  # (the real fd 2, the file that stands in for it)


def _flush_python_stderr() -> None:
    for stream in (sys.stderr, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass


@contextmanager
def runtime_logs_silenced():
    """Keep the inference runtimes' native log lines off the user's terminal for the block's duration.

    LiteRT's C++ code writes `INFO: Created TensorFlow Lite XNNPACK delegate for CPU.` straight to file
    descriptor 2 when the interpreter first allocates its tensors, where no Python setting reaches it.
    So fd 2 points at a temporary file meanwhile; afterwards the real stderr is restored and whatever
    else was written there (a Python warning, another thread's output) is passed on, without the
    runtimes' log lines. Nested and concurrent blocks share one redirection (the last one out restores).
    """
    global _quiet_depth, _quiet_saved
    with _quiet_lock:
        if _quiet_depth == 0:
            try:
                _flush_python_stderr()
                capture = tempfile.TemporaryFile()
                saved = os.dup(2)
                os.dup2(capture.fileno(), 2)
                _quiet_saved = (saved, capture)
            except OSError:  # no fd 2 at all (a daemon) or no temp space: nothing to silence then
                _quiet_saved = None
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _quiet_saved is not None:
                saved, capture = _quiet_saved
                _quiet_saved = None
                _flush_python_stderr()
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                kept = b"".join(line for line in capture.read().splitlines(keepends=True)
                                if not RUNTIME_LOG_LINE.match(line))
                capture.close()
                if kept:
                    try:
                        os.write(2, kept)
                    except OSError:
                        pass
