"""Reading log files by line for ``kapell logs``: the last lines, then what was appended.

Both answer whole lines only and the byte offset just past the last one, which the caller passes
back to read on (``--follow``). A line still being written waits for its newline.
"""

from __future__ import annotations

import os
from pathlib import Path

READ_LIMIT_BYTES = 1 << 20
"""Most bytes one call returns; a caller that follows simply reads again."""
_BLOCK = 64 * 1024


def tail(path: Path, lines: int, partial: bool = False) -> tuple[list[str], int]:
    """The last ``lines`` lines of ``path`` and the offset after them.

    A last line without its newline counts only with ``partial`` (to show, not to follow:
    following reads it once it is whole). Reads backwards in blocks, so a long access log
    costs what the answer costs.
    """
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        end = size if partial else _complete_end(f.fileno(), size)
        position, data = end, b""
        while position > 0 and data.count(b"\n") <= lines:
            step = min(_BLOCK, position)
            position -= step
            f.seek(position)
            data = f.read(step) + data
    found = _lines(data)
    return (found[-lines:] if lines > 0 else []), end


def read_from(path: Path, offset: int) -> tuple[list[str], int]:
    """Complete lines appended since ``offset``, and the offset after them.

    A file shorter than ``offset`` was truncated or replaced: it is read from the start.
    """
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if offset > size:
            offset = 0
        f.seek(offset)
        data = f.read(min(size - offset, READ_LIMIT_BYTES))
    cut = data.rfind(b"\n") + 1
    if cut == 0 and len(data) == READ_LIMIT_BYTES:  # one line longer than the limit
        cut = len(data)
    return _lines(data[:cut]), offset + cut


def _lines(data: bytes) -> list[str]:
    """Lines split at newlines only (a carriage return, as progress bars write, stays)."""
    lines = data.decode(errors="replace").split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def _complete_end(fd: int, size: int) -> int:
    """The offset just past the last newline of the first ``size`` bytes (0 if none)."""
    position = size
    while position > 0:
        step = min(_BLOCK, position)
        block = os.pread(fd, step, position - step)
        found = block.rfind(b"\n")
        if found >= 0:
            return position - step + found + 1
        position -= step
    return 0
