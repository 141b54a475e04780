"""One bounded HTTP exchange, against a real loopback server."""

from __future__ import annotations

from typing import Any

import pytest_twisted
import treq

from ghhook.httpclient import MAX_BODY, QuietPool, whole_answer
from tests.stallserver import GUARD, StallServer, whole


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


@pytest_twisted.ensureDeferred
async def test_a_large_body_is_read_to_its_end_but_only_its_start_is_kept() -> None:
    server = StallServer(reactor(), whole(200, b"x" * (MAX_BODY * 3)))
    try:
        request = treq.get(server.url, pool=QuietPool(reactor(), persistent=False))
        response, body = await whole_answer(request, GUARD, reactor())
        assert response.code == 200
        assert body == b"x" * MAX_BODY
    finally:
        await server.stop()
