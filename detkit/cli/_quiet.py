"""Keep TensorFlow's and XLA's C++ log lines off the terminal unless asked for.

TensorFlow 2.21 prints its start-up lines (``oneDNN custom operations are on``, ``All
log messages before absl::InitializeLog()``, XLA and CUDA factory notices) from C++ on
file descriptor 2, whatever ``TF_CPP_MIN_LOG_LEVEL`` says. :func:`quiet_library_logs`
routes descriptor 2 through a pipe whose reader drops those lines and passes every other
line on; Python's ``sys.stderr`` (warnings, errors, progress bars) keeps writing to the
terminal directly, so Rich still sees a terminal. ``DETKIT_VERBOSE=1`` turns it off.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

#: Set to 1 (or anything but "", "0") to see the libraries' log lines.
VERBOSE_VARIABLE = "DETKIT_VERBOSE"

#: A C++ log line of absl/TensorFlow/XLA: ``I0000 00:00:1796.123 12 port.cc:153] ...``
#: (severity letter, date, time, thread, file:line), or one of the banners they print.
#: Also TF Lite's ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``, and
#: OpenCV's and FFmpeg's own (``[ WARN:0@1.2] global cap.cpp ...``, ``OpenCV: FFMPEG:
#: tag ...``, ``[mov,mp4,m4a @ 0x55e6c0692d80] moov atom not found``): detkit reports an
#: unreadable or unwritable video itself, naming the file. And the TF Lite calibrator's
#: ``fully_quantize: 0, inference_type: 6, ...`` settings line (an int8 export).
_NOISE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w./-]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] [\w/.-]+:\d+\]"
    rb"|INFO: (?:Created|Initialized) TensorFlow Lite"
    rb"|\[ *(?:WARN|ERROR|INFO|DEBUG):\d+@[\d.]+\]"
    rb"|OpenCV: FFMPEG: "
    rb"|\[[\w,.-]+ @ 0x[0-9a-f]+\] "
    rb"|fully_quantize: \d+, inference_type: \d+)")


def is_library_noise(line: bytes) -> bool:
    """Whether one stderr line (bytes, newline optional) is a C++ library log line."""
    return _NOISE.match(line) is not None


def quiet_library_logs() -> None:
    """Filter descriptor 2 for the rest of the process (no-op when verbose or repeated)."""
    if os.environ.get(VERBOSE_VARIABLE, "") not in ("", "0"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if getattr(quiet_library_logs, "_active", False):
        return
    try:
        sys.stderr.flush()
        terminal = os.dup(2)
        read_end, write_end = os.pipe()
    except (OSError, ValueError):  # no descriptor 2 (a detached process): nothing to hide
        return
    # Python's own writes go straight to the saved descriptor: Rich still sees a tty.
    sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1,
                           encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                           errors="backslashreplace")
    os.dup2(write_end, 2)
    os.close(write_end)
    reader = threading.Thread(target=_pass_on, args=(read_end, terminal), daemon=True)
    reader.start()

    def restore() -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(terminal, 2)  # closes the pipe's last write end: the reader sees EOF
        reader.join(timeout=2)

    atexit.register(restore)
    quiet_library_logs._active = True


def _pass_on(read_end: int, terminal: int) -> None:
    """Copy lines from ``read_end`` to ``terminal``, dropping library log lines."""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        pending = b""
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not is_library_noise(line))
            if kept:
                os.write(terminal, kept)
        if pending and not is_library_noise(pending):
            os.write(terminal, pending)
