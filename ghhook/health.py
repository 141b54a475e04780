"""
Poll the restarted service's health URL with a real HTTP client (treq).

The check is a deploy step like the others: it has a name, an "argv"
(``GET URL``), an outcome and an output tail, so it lands in the journal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.client import Agent

from ghhook.escape import printable
from ghhook.httpclient import NoWholeAnswer, QuietPool, whole_answer
from ghhook.runner import StepResult

log = Logger(namespace="ghhook.health")

#: Seconds between two polls of the health URL.
POLL_INTERVAL = 0.5
#: Seconds one poll (connect, headers and body) may take before it counts as a failure.
REQUEST_TIMEOUT = 5.0


class HealthCheck:
    """Poll ``url`` until a 2xx or ``timeout`` seconds have passed."""

    def __init__(
        self,
        reactor: Any,
        interval: float = POLL_INTERVAL,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._reactor = reactor
        self._interval = interval
        self._wall_clock = wall_clock
        pool = QuietPool(reactor, persistent=False)
        self._client = HTTPClient(Agent(reactor, pool=pool))

    def check(self, name: str, url: str, timeout: float) -> Deferred[StepResult]:
        """Fires with the step's result by ``timeout`` seconds at the latest."""
        return Deferred.fromCoroutine(self._poll(name, url, timeout))

    async def _poll(self, name: str, url: str, timeout: float) -> StepResult:
        started = self._wall_clock()
        begun = self._reactor.seconds()
        deadline = begun + timeout
        attempts = 0
        while True:
            attempts += 1
            remaining = deadline - self._reactor.seconds()
            code, last = await self._probe(url, min(REQUEST_TIMEOUT, remaining))
            if code is not None and 200 <= code < 300:
                log.info("health check passed: {url} answered {code}", url=url, code=code)
                return self._result(name, url, 0, started, begun, attempts, last)
            if self._reactor.seconds() + self._interval >= deadline:
                log.error("health check failed: {url}: {last}", url=url, last=printable(last))
                return self._result(name, url, 1, started, begun, attempts, last, timed_out=True)
            await deferLater(self._reactor, self._interval, lambda: None)

    async def _probe(self, url: str, limit: float) -> tuple[int | None, str]:
        """One GET, body included, within ``limit`` s: its status (None if none) and a line."""
        try:
            response, body = await whole_answer(self._client.get(url), limit, self._reactor)
        except NoWholeAnswer as e:
            return None, str(e)
        except Exception as e:  # noqa: BLE001 - any failure to answer is unhealthy
            return None, f"{type(e).__name__}: {e}".strip()
        text = body[:200].decode("utf-8", "replace").strip()
        return response.code, f"HTTP {response.code} {text}".strip()

    def _result(
        self,
        name: str,
        url: str,
        code: int,
        started: float,
        begun: float,
        attempts: int,
        last: str,
        timed_out: bool = False,
    ) -> StepResult:
        return StepResult(
            name=name,
            argv=("GET", url),
            exit_code=code,
            signal=None,
            timed_out=timed_out,
            started=started,
            duration=self._reactor.seconds() - begun,
            output=f"{attempts} attempt(s); last answer: {last}",
        )
