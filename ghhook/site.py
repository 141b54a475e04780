"""
The HTTP site both listeners serve their resources with: bodies capped
before they are buffered, channels that time out, no access log line.
"""

from __future__ import annotations

import json

from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

log = Logger(namespace="ghhook.web")

#: GitHub caps payloads at 25 MB; so do we, before reading more.
MAX_BODY = 25 * 1024 * 1024
#: Seconds an idle or slow connection may hold a channel open.
CHANNEL_TIMEOUT = 60


class CappedRequest(Request):
    """
    A request that refuses a body over ``MAX_BODY`` with 413 as soon as the
    declared length (or the chunks received) exceed it, before buffering more.
    """

    max_body = MAX_BODY
    _received = 0
    _refused = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self.max_body:
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self) -> None:
        self._refused = True
        body = (
            json.dumps({"error": f"the body exceeds the limit of {self.max_body} bytes"}).encode(
                "utf-8"
            )
            + b"\n"
        )
        log.warn("refused a body over {limit} bytes", limit=self.max_body)
        transport = self.channel.transport
        assert transport is not None
        transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Connection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.channel.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return
        super().requestReceived(command, path, version)


def make_site(resource: IResource, max_body: int = MAX_BODY) -> Site:
    """A site whose requests cap their bodies and whose channels time out."""

    class Capped(CappedRequest):
        pass

    Capped.max_body = max_body
    # ghhook reads the raw body itself: Twisted's form parsing (an email-package
    # parse of Content-Type on every POST) would only cost time and memory.
    site = QuietSite(
        resource,
        requestFactory=Capped,
        timeout=CHANNEL_TIMEOUT,
        parsePOSTFormSubmission=False,
    )
    site.displayTracebacks = False
    return site


class QuietSite(Site):
    """
    A site without the per-request access log line: every delivery already
    gets a structured event saying what was done with it, and a flood of
    bad requests must not become a flood of log lines.
    """

    def log(self, request: http.Request) -> None:
        pass
