"""Server-side limits and log hygiene for the API process.

Header limits: uvicorn's default parser (httptools) buffers a request head of any size,
so a single 256 MB header was accepted, unauthenticated. `LimitedHttpToolsProtocol`
answers 431 and closes the connection once a request head passes `MAX_HEADER_BYTES`
or `MAX_HEADER_COUNT` fields, before the application sees it.

Token redaction: the dashboard used to put the API token in URLs (`?token=`), and
uvicorn logs request lines, so the token landed in the access log. `RedactTokens`
rewrites `token=<value>` (and any `access_token`, `api_key`) in every record of the
uvicorn loggers.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024  # request line + header fields of one request
# Kernel send buffer of a WebSocket: small, so a backlog waits in the feed's own bounded
# queue (which it can count and drop) and a 1013 close frame is never stuck behind
# megabytes of loopback buffers when the client is slow.
WS_SEND_BUFFER_BYTES = 64 * 1024
MAX_HEADER_COUNT = 100
_SECRET_QUERY = re.compile(r"((?:^|[?&;\s\"'])(?:token|access_token|api_key)=)[^&\s\"'#]*", re.I)
REDACTED = "***"

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_HEADER_COUNT",
    "LimitedHttpToolsProtocol",
    "RedactTokens",
    "install_log_redaction",
    "redact",
    "server_options",
]


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limits."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a budget for request heads (431 beyond it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._too_large = False

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._too_large = True
                self.send_400_response("Request header fields too large.")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADER_COUNT:
            self._too_large = True
            raise _HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, WS_SEND_BUFFER_BYTES)
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        if not self._too_large:
            super().send_400_response(msg)
            return
        body = b"Request header fields too large."
        head = [STATUS_LINE[431]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(b"content-type: text/plain; charset=utf-8\r\n")
        head.append(
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
        )
        if not self.transport.is_closing():
            self.transport.write(b"".join(head) + body)
            self.transport.close()


def redact(text: str) -> str:
    """`text` with the values of token-like query parameters replaced by ***."""
    return _SECRET_QUERY.sub(lambda m: m.group(1) + REDACTED, text)


class RedactTokens(logging.Filter):
    """Redacts a record's message and each of its string arguments in place.

    The arguments keep their shape: uvicorn's access formatter unpacks them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


_FILTER = RedactTokens()
_LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error", "signalengine.api")


def install_log_redaction() -> None:
    """Add the filter to the uvicorn and API loggers (idempotent)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def server_options() -> dict[str, Any]:
    """uvicorn options every API server uses: the limited parser."""
    return {"http": LimitedHttpToolsProtocol}
