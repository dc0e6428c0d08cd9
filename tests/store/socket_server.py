"""A hand-written TCP server on 127.0.0.1 for wire tests: each connection is handed to ``serve`` in a thread
of its own (no HTTP library on this side unless the test brings one)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def socket_server(serve: Callable[[socket.socket, threading.Event], None]) -> Iterator[str]:
    """Accept connections until the block ends, calling ``serve(conn, stop)`` for each in a new thread
    (``stop`` is set when the block ends); yields ``http://127.0.0.1:PORT``."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn, stop), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()
