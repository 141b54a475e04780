"""
Tell systemd how the service is doing (``sd_notify``), without libsystemd.

With ``Type=notify`` systemd waits for ``READY=1`` before it counts the
service as started; the message is one datagram on the Unix socket named
by ``$NOTIFY_SOCKET`` (a path, or an abstract name written with a leading
``@``). Outside systemd the variable is unset and :func:`notify` does nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from twisted.logger import Logger

log = Logger(namespace="ghhook.notify")


def notify_address(environ: Mapping[str, str]) -> bytes | None:
    """The socket address ``$NOTIFY_SOCKET`` names, or None when unusable."""
    name = environ.get("NOTIFY_SOCKET", "")
    if name.startswith("@") and len(name) > 1:
        # An abstract socket: the name starts with a NUL byte, not '@'.
        return b"\0" + os.fsencode(name[1:])
    if name.startswith("/"):
        return os.fsencode(name)
    # Unset, empty, or a kind ghhook does not speak (such as vsock:).
    return None


def notify(state: bytes, environ: Mapping[str, str] = os.environ) -> bool:
    """
    Send ``state`` (e.g. ``b"READY=1"``, ``b"STOPPING=1"``,
    ``b"STATUS=..."``) to systemd.

    Never blocks: a full or missing socket is logged and reported as False,
    because failing to tell systemd is no reason to stop serving.

    :return: True when the datagram was sent, False otherwise.
    """
    address = notify_address(environ)
    if address is None:
        if environ.get("NOTIFY_SOCKET"):
            log.warn(
                "NOTIFY_SOCKET={socket} is not a Unix socket path; not notifying",
                socket=environ["NOTIFY_SOCKET"],
            )
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(state, address)
    except OSError as e:
        log.warn(
            "cannot notify systemd on {socket}: {error}",
            socket=environ["NOTIFY_SOCKET"],
            error=e.strerror or str(e),
        )
        return False
    return True


__all__ = ["notify", "notify_address"]
