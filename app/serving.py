"""The gunicorn worker `respawn serve` and the container run: gthread, made slow-client proof.

gunicorn's gthread worker hands a connection to a thread as soon as it is accepted (or as
soon as a kept-alive one becomes readable), and the thread then reads the request head with
blocking reads. A client that sends its head slowly (a partial header, one more line every
few seconds) holds that thread for as long as it likes, and a few dozen such clients hold
them all: `/healthz` and the Runner's callbacks wait behind them.

`HeadFirstWorker` reads each request's head in the worker's event loop instead, without a
thread, and gives the connection to a thread only once the head is complete (the bytes read
are handed to gunicorn's parser). A head that is not complete within `HEAD_TIMEOUT` seconds,
or is larger than `HEAD_LIMIT`, closes the connection. Threads only ever run requests whose
head has arrived, so any number of slow clients (up to `worker_connections`) cost a socket
each, not a thread.

Connections are also spread over the workers. They share one listening socket, and the
worker that wakes first accepts: a burst of new connections (a proxy or a Runner opening its
pool of kept-alive connections) can all land on one worker while another idles, most of all
when the machine is busy, and a kept-alive connection stays where it landed. So a worker
that already holds a connection per thread pauses before it accepts again (`ACCEPT_PAUSE`
seconds per `threads` connections it holds), and a less busy worker takes the next one
meanwhile; when all are busy, each still accepts after its pause. Past `ACCEPT_SPREAD`
connections per thread it no longer pauses: that many are slow clients or a load no pause
would spread, and 256 slow clients must not hold up a `/healthz` behind their accepts.
Everything else is gunicorn's gthread, unchanged.
"""

from __future__ import annotations

import contextlib
import selectors
import time
from collections import OrderedDict
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

HEAD_TIMEOUT = 10.0
"""Seconds a client has to send a whole request head (request line and headers)."""
HEAD_LIMIT = 64 * 1024
"""Bytes a head may take; more is handed to gunicorn's parser, which refuses it."""
_END_OF_HEAD = b"\r\n\r\n"
ACCEPT_PAUSE = 0.005
"""Seconds a worker waits before it accepts again, per `threads` connections it holds..."""
ACCEPT_SPREAD = 4
"""...while it holds at most this many connections per thread (20 ms at most)."""


class HeadConn(TConn):  # type: ignore[misc]  # gunicorn ships no type hints
    """A connection whose request head may already have been read by the event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head = bytearray()
        self.head_deadline = 0.0
        self.prefetched: bytes | None = None


class HeadFirstWorker(ThreadWorker):  # type: ignore[misc]
    """gthread whose threads only take connections with a complete request head."""

    def init_process(self) -> None:
        # Connections waiting for their head, oldest first (insertion order = deadline order).
        self.heads: OrderedDict[int, HeadConn] = OrderedDict()
        self.accept_after = 0.0
        super().init_process()

    # --- where connections come from ------------------------------------------------------

    def set_accept_enabled(self, enabled: bool) -> None:
        """gunicorn's loop turns accepting back on whenever there is room: not in a pause."""
        if enabled and time.monotonic() < self.accept_after:
            return
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        pause = self.accept_after - time.monotonic()
        if pause > 0:
            timeout = min(timeout, pause)
        elif not self._accepting and self.nr_conns < self.worker_connections:
            super().set_accept_enabled(True)  # the pause is over
        super().wait_for_and_dispatch_events(timeout)

    def accept(self, listener: Any) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError:
            return  # EAGAIN (another worker took it), ECONNABORTED: nothing to do
        self.nr_conns += 1
        held = self.nr_conns // max(self.cfg.threads, 1)
        if 0 < held <= ACCEPT_SPREAD:
            # A less busy worker takes the next connection first.
            self.accept_after = time.monotonic() + ACCEPT_PAUSE * held
            super().set_accept_enabled(False)
        conn = HeadConn(self.cfg, client_sock, client_addr, listener.getsockname())
        if self.cfg.is_ssl:
            client_sock.setblocking(True)
            self.enqueue_req(conn)  # TLS is terminated in front of respawn; keep gunicorn's way
            return
        self._await_head(conn)

    def on_client_socket_readable(self, conn: HeadConn, client: Any) -> None:
        """A kept-alive connection has bytes: the next request's head is on its way."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_head(conn)
        self._on_head_readable(conn, client)

    # --- reading heads in the event loop --------------------------------------------------

    def _await_head(self, conn: HeadConn) -> None:
        conn.sock.setblocking(False)
        conn.head.clear()
        conn.head_deadline = time.monotonic() + HEAD_TIMEOUT
        self.heads[id(conn)] = conn
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_readable, conn))

    def _on_head_readable(self, conn: HeadConn, client: Any) -> None:
        if id(conn) not in self.heads:
            return
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        conn.head += data
        if _END_OF_HEAD in conn.head or len(conn.head) > HEAD_LIMIT:
            del self.heads[id(conn)]
            self.poller.unregister(conn.sock)
            conn.prefetched = bytes(conn.head)
            conn.head.clear()
            conn.data_ready = True
            self.enqueue_req(conn)

    def _drop(self, conn: HeadConn) -> None:
        self.heads.pop(id(conn), None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Close connections whose head did not arrive in time (run()'s housekeeping)."""
        super().murder_pending()
        now = time.monotonic()
        while self.heads:
            conn = next(iter(self.heads.values()))
            if conn.head_deadline > now:
                break
            self._drop(conn)

    # --- in the thread ----------------------------------------------------------------------

    def handle(self, conn: HeadConn) -> Any:
        prefetched = conn.prefetched
        if prefetched is not None:
            conn.prefetched = None
            conn.sock.setblocking(True)
            conn.init()
            # The parser reads what the event loop already read first, then the socket.
            conn.parser.unreader.unread(prefetched)
        return super().handle(conn)
