"""One HTTP request over a Unix socket, written by hand with the standard library only.

Tests use it to send what a hand-made client would, and to run a client as another user
(who may not be able to read the venv): pass this file's source to ``python -I -c`` with
``PATH METHOD ROUTE``; it prints ``{"status": ..., "body": ...}`` or ``{"error": ERRNO}``.
"""

from __future__ import annotations

import errno
import json
import socket
import sys
from typing import Any


def request(path: str, method: str, route: str, timeout: float = 20.0) -> tuple[int, Any]:
    """The status and JSON body of the answer (``Connection: close``: read to the end)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(f"{method} {route} HTTP/1.1\r\nHost: miner\r\nContent-Length: 0\r\n"
                  f"Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


if __name__ == "__main__":
    try:
        status, body = request(*sys.argv[1:4])
    except OSError as exc:
        print(json.dumps({"error": errno.errorcode.get(exc.errno or 0, str(exc))}))
    else:
        print(json.dumps({"status": status, "body": body}))
