"""A job's stdout and stderr: counted against its cap, logged with a cap, tailed live.

Both streams share one byte budget (``Limits.output_bytes``); the first byte over it sets
``OutputBudget.exceeded`` and the sandbox stops the job (``E_OUTPUT_LIMIT``). Reading
goes on after that so the job never blocks on a full pipe while it is being stopped.
Each stream is written line by line, with registered secrets redacted, to
``<log_dir>/<stream>.log`` until ``Limits.log_bytes``; complete lines go to the console
tail through ``on_line``, at most ``LINES_PER_S`` a second (the rest are counted, and
the count is shown, rather than flooding the engine's event bus).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .. import logs

LINES_PER_S = 50  # console tail rate per stream; a job printing faster is summarised
MAX_LINE = 4096  # bytes; a longer run without a newline is cut into lines of this size
STDERR_TAIL = 2000  # characters of stderr kept for the E_EXIT message
READ_CHUNK = 65536

LineSink = Callable[[str], None]


class OutputBudget:
    """Bytes a job may write to stdout and stderr together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.exceeded = asyncio.Event()

    def spend(self, count: int) -> bool:
        """Count ``count`` bytes; False once the total is over the limit."""
        self.used += count
        if self.used > self.limit:
            self.exceeded.set()
        return not self.exceeded.is_set()


class StreamCapture:
    """One output stream of one job."""

    def __init__(self, name: str, log_path: Path, log_cap: int, budget: OutputBudget,
                 on_line: LineSink | None, *, keep: bool) -> None:
        self.name = name
        self.log_path = log_path
        self.log_cap = log_cap
        self.budget = budget
        self.on_line = on_line
        self.keep = keep
        self.kept = bytearray()  # stdout within the budget, for the result
        self.tail = ""  # the last STDERR_TAIL characters, redacted
        self._partial = b""
        self._logged = 0
        self._window_start = 0.0
        self._window_lines = 0
        self._skipped = 0

    async def pump(self, reader: asyncio.StreamReader) -> None:
        """Read until EOF (every holder of the pipe has exited)."""
        with self.log_path.open("ab") as log_file:
            while chunk := await reader.read(READ_CHUNK):
                within = self.budget.spend(len(chunk))
                if within and self.keep:
                    self.kept += chunk
                self._lines(chunk, log_file)
            if self._partial:
                self._emit(self._partial, log_file)
                self._partial = b""
            if self._skipped:
                self._send(f"[{self._skipped} more lines of {self.name} not shown]")

    def _lines(self, chunk: bytes, log_file: BinaryIO) -> None:
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        while len(self._partial) > MAX_LINE:
            lines.append(self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]
        for line in lines:
            self._emit(line, log_file)

    def _emit(self, raw: bytes, log_file: BinaryIO) -> None:
        text = logs.redact(raw.decode("utf-8", "replace").rstrip("\r"))
        self.tail = (self.tail + text + "\n")[-STDERR_TAIL:]
        encoded = (text + "\n").encode()
        if self._logged + len(encoded) <= self.log_cap:
            log_file.write(encoded)
            self._logged += len(encoded)
        elif self._logged < self.log_cap:
            log_file.write(b"[log cap reached; further output not kept]\n")
            self._logged = self.log_cap
        self._tail_line(text)

    def _tail_line(self, text: str) -> None:
        if self.on_line is None:
            return
        now = asyncio.get_running_loop().time()
        if now - self._window_start >= 1.0:
            if self._skipped:
                self._send(f"[{self._skipped} lines of {self.name} not shown]")
            self._window_start, self._window_lines, self._skipped = now, 0, 0
        if self._window_lines >= LINES_PER_S:
            self._skipped += 1
            return
        self._window_lines += 1
        self._send(text)

    def _send(self, text: str) -> None:
        if self.on_line is not None:
            self.on_line(text[-500:])
