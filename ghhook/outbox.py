"""
Send the journal's outbox: commit statuses, GitHub deployments and
notifications, at least once, in order per deploy, never in a deploy's way.

The engine writes each report into the journal in the same transaction as
the deploy's state change (:mod:`ghhook.reports` plans them); this service
reads them back, oldest first, and sends them one at a time. A report that
fails for a while (the forge down, a 5xx, a timeout, a rate limit) is tried
again later, with exponential backoff and jitter, or when the forge says
(``Retry-After``, ``X-RateLimit-Reset``); one the forge will never take
(401, 403, 404, 422) is given up at once, with one log line. The token is
added here, as the request leaves: no row of the journal holds one.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import attrs
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

import ghhook
from ghhook.config import DaemonSettings
from ghhook.escape import printable
from ghhook.httpclient import describe_failure
from ghhook.journal import Journal, JournalError
from ghhook.reports import SIGNATURE_HEADER, Kind, NotifySettings, apprise_text, auth_header, sign

log = Logger(namespace="ghhook.outbox")

#: Seconds one report's whole exchange may take (connect, headers, body).
SEND_TIMEOUT = 30.0
#: The first retry waits about this long; each one after waits twice as long ...
BACKOFF_FIRST = 5.0
#: ... up to this.
BACKOFF_MOST = 600.0
#: The longest wait a forge's Retry-After or rate-limit reset is taken at.
WAIT_MOST = 3600.0
#: GitHub's secondary rate limit asks for at least a minute.
SECONDARY_WAIT = 60.0
#: A report still not sent this long after it was made is given up.
GIVE_UP_AFTER = 24 * 3600.0
#: Answers that trying again will not change.
_FINAL = (400, 401, 403, 404, 405, 410, 422)


@attrs.frozen
class Answer:
    code: int
    headers: Mapping[str, str]
    body: bytes


class Poster(Protocol):
    """Posts one request and reads the whole answer within ``timeout``, or raises."""

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Deferred[Answer]: ...


class ReportCounter(Protocol):
    """Counts reports by app, kind and outcome (the metrics implement it)."""

    def report(self, app: str, kind: str, outcome: str) -> None: ...


class TreqPoster:
    """:class:`Poster` over treq, with a quiet pool."""

    def __init__(self, reactor: Any) -> None:
        from treq.client import HTTPClient
        from twisted.web.client import Agent

        from ghhook.httpclient import QuietPool

        self._reactor = reactor
        # A connection per report: reports are few, and a kept connection the
        # server closed meanwhile fails the next POST (never retried, not idempotent).
        self._client = HTTPClient(Agent(reactor, pool=QuietPool(reactor, persistent=False)))

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Deferred[Answer]:
        from twisted.web.http_headers import Headers

        from ghhook.httpclient import whole_answer

        # Never follow a redirect: a token (GitLab's PRIVATE-TOKEN survives
        # one) must not reach another host, and a 303's GET is no report sent.
        request = self._client.post(
            url,
            data=body,
            headers=Headers({k: [v] for k, v in headers.items()}),
            allow_redirects=False,
        )

        async def exchange() -> Answer:
            response, content = await whole_answer(request, timeout, self._reactor)
            found = {
                name.decode("latin-1").lower(): values[0].decode("latin-1")
                for name, values in response.headers.getAllRawHeaders()
            }
            return Answer(response.code, found, content)

        return Deferred.fromCoroutine(exchange())


def apprise_notify(url: str, title: str, body: str) -> bool:
    """Send through Apprise (in a thread: it blocks); True when it says it sent."""
    import apprise  # the ghhook[notify] extra; the config refuses apprise_url without it

    sender = apprise.Apprise()
    if not sender.add(url):
        raise ValueError("Apprise does not understand the URL")
    return bool(sender.notify(title=title, body=body))


class Retry(Exception):
    """
    Try the report again after ``wait`` seconds (None: the backoff's);
    ``limited``: the forge rate-limits us, so no report goes to it meanwhile.
    """

    def __init__(self, why: str, wait: float | None = None, limited: bool = False) -> None:
        super().__init__(why)
        self.wait = wait
        self.limited = limited


class GiveUp(Exception):
    """The report will never go through; the message says why."""


class Outbox(Service):
    """
    Sends the outbox's reports while the daemon runs.

    :param settings: the daemon's settings now (a reload changes tokens, URLs
        and notifications; a report goes with the ones in force when it is sent).
    :param wall_clock: the clock the journal's ``created`` and ``due`` are on.
    """

    name = "outbox"

    def __init__(
        self,
        journal: Journal,
        settings: Callable[[], DaemonSettings],
        reactor: Any,
        poster: Poster | None = None,
        counter: ReportCounter | None = None,
        wall_clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        apprise: Callable[[str, str, str], bool] = apprise_notify,
        in_thread: Callable[..., Deferred[Any]] = deferToThread,
    ) -> None:
        self.journal = journal
        self._settings = settings
        self._reactor = reactor
        self._poster = poster if poster is not None else TreqPoster(reactor)
        self._counter = counter
        self._wall_clock = wall_clock
        self._jitter = jitter
        self._apprise = apprise
        self._in_thread = in_thread
        self._timer: IDelayedCall | None = None
        self._draining: Deferred[None] | None = None
        self._sending: Deferred[Any] | None = None
        self._again = False
        #: Whether the journal's refusal was logged (once until it works again).
        self._journal_down = False
        #: Forge APIs (scheme and host) that rate-limit us, until when.
        self._limited: dict[str, float] = {}

    # Service

    def startService(self) -> None:
        super().startService()
        self.wake()

    def stopService(self) -> Deferred[None]:
        """Stop sending: a report in flight is cancelled, and sent again at the next start."""
        super().stopService()
        self._cancel_timer()
        if self._sending is not None:
            self._sending.cancel()
        done: Deferred[None] = Deferred()
        if self._draining is None:
            done.callback(None)
        else:
            self._draining.addBoth(lambda _: done.callback(None))
        return done

    # Draining

    def wake(self) -> None:
        """New reports were written (or time has come): send what is due."""
        if not self.running:
            return
        if self._draining is not None:
            self._again = True
            return
        self._cancel_timer()
        self._draining = Deferred.fromCoroutine(self._drain())
        self._draining.addErrback(lambda f: log.failure("the outbox failed", f))
        self._draining.addBoth(self._drained)

    def _drained(self, _: object) -> None:
        self._draining = None
        if self._again and self.running:
            self._again = False
            self.wake()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    async def _drain(self) -> None:
        while self.running:
            self._again = False
            try:
                due = self.journal.due_reports(self._wall_clock())
            except JournalError as e:
                self._journal_failed(e)
                self._timer = self._reactor.callLater(BACKOFF_FIRST, self.wake)
                return
            if not due:
                break
            for report in due:
                if not self.running:
                    return
                try:
                    await self._one(report)
                except JournalError as e:
                    # Not recorded: sent again, but not before the journal works.
                    self._journal_failed(e)
                    self._timer = self._reactor.callLater(BACKOFF_FIRST, self.wake)
                    return
        if not self.running:
            return
        try:
            next_due = self.journal.next_report_due()
        except JournalError as e:
            self._journal_failed(e)
            next_due = self._wall_clock() + BACKOFF_FIRST
        if next_due is not None and not self._again:
            delay = max(0.0, next_due - self._wall_clock())
            self._timer = self._reactor.callLater(delay, self.wake)

    def _journal_failed(self, error: JournalError) -> None:
        if not self._journal_down:
            self._journal_down = True
            log.warn("the outbox cannot read the journal; trying again: {error}", error=str(error))

    async def _one(self, report: Mapping[str, Any]) -> None:
        """Send one report and record how it went."""
        app, kind = str(report["app"]), str(report["kind"])
        now = self._wall_clock()
        where = f"{kind} of deploy {report['deploy']}"
        api = _origin(str(report["url"])) if report["target"] == "forge" else None
        until = self._limited.get(api or "", 0.0)
        if until > now:
            # Requests while rate-limited can get a token banned: wait with it.
            self.journal.report_later(int(report["id"]), until, "the forge rate-limits ghhook")
            return
        try:
            try:
                answer = await self._send(report)
            except (CancelledError, GiveUp, Retry, JournalError):
                raise
            except Exception as e:  # noqa: BLE001 - one report never ends the drain
                log.failure("{app}: {what} hit an unexpected error", app=app, what=where)
                raise Retry(f"unexpected error: {type(e).__name__}") from None
        except CancelledError:
            return  # stopping: it stays pending, and goes at the next start
        except GiveUp as e:
            self._give_up(report, where, str(e))
            return
        except Retry as e:
            if now - float(report["created"]) > GIVE_UP_AFTER:
                self._give_up(report, where, f"still failing after 24 hours: {e}")
                return
            wait = e.wait if e.wait is not None else self._backoff(int(report["attempts"]))
            if e.limited and api is not None:
                self._limited[api] = now + wait
            self.journal.report_later(int(report["id"]), now + wait, str(e))
            self._journal_down = False
            if int(report["attempts"]) == 0:
                # Once per report: a forge that is down does not flood the log.
                log.warn(
                    "{app}: {what} not sent yet ({why}); trying again in {wait:.0f} s",
                    app=app,
                    what=where,
                    why=printable(str(e)),
                    wait=wait,
                )
            self._count(app, kind, "retried")
            return
        self._record(report, "sent", f"HTTP {answer.code}" if answer else "sent", _answer(answer))
        if int(report["attempts"]) > 0:
            log.info(
                "{app}: {what} sent after {tries} tries",
                app=app,
                what=where,
                tries=int(report["attempts"]) + 1,
            )
        self._count(app, kind, "sent")

    def _give_up(self, report: Mapping[str, Any], where: str, why: str) -> None:
        """Record a report given up, and say so once: it is never tried again."""
        app, kind = str(report["app"]), str(report["kind"])
        self._record(report, "failed", why)
        log.error(
            "{app}: {what} given up: {why}", app=app, what=where, why=printable(why), kind=kind
        )
        self._count(app, kind, "failed")

    def _record(
        self, report: Mapping[str, Any], state: str, outcome: str, answer: str | None = None
    ) -> None:
        """Record how a report went; a JournalError ends the drain (see :meth:`_drain`)."""
        self.journal.report_done(int(report["id"]), state, outcome[:500], answer)
        self._journal_down = False

    def _count(self, app: str, kind: str, outcome: str) -> None:
        if self._counter is not None:
            self._counter.report(app, kind, outcome)

    def _backoff(self, attempts: int) -> float:
        """Exponential, with jitter: between half and all of the step's wait."""
        wait = min(BACKOFF_MOST, BACKOFF_FIRST * 2**attempts)
        return wait * (0.5 + self._jitter() / 2)

    # Sending

    async def _send(self, report: Mapping[str, Any]) -> Answer | None:
        settings = self._settings()
        target = str(report["target"])
        body = json.dumps(report["body"]).encode("utf-8")
        if target != "forge":
            notify = next((n for n in settings.notify if n.name == target), None)
            if notify is None:
                raise GiveUp(f"{target} is no longer in the configuration")
            return await self._notify(notify, report["body"], body)
        app = settings.app(str(report["app"]))
        if app is None or app.report is None:
            raise GiveUp("the app no longer reports to its forge")
        url = str(report["url"])
        if "{deployment}" in url:
            made = self.journal.report_answer(
                str(report["app"]), int(report["deploy"]), Kind.DEPLOYMENT.value
            )
            if made is None:
                raise GiveUp("the deploy's GitHub deployment was not created")
            url = url.replace("{deployment}", made)
        name, value = auth_header(app.forge, app.report.token)
        headers = {
            name: value,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"ghhook/{ghhook.__version__}",
        }
        if app.forge == "github":
            headers["Accept"] = "application/vnd.github+json"
            headers["X-GitHub-Api-Version"] = "2022-11-28"
        answer = await self._post(url, body, headers)
        _judge(answer, app.forge, self._wall_clock())
        return answer

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        self._sending = self._poster.post(url, body, headers, SEND_TIMEOUT)
        try:
            return await self._sending
        except CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every way of not answering is a retry
            raise Retry(_failure_words(e)) from None
        finally:
            self._sending = None

    async def _notify(self, notify: NotifySettings, document: Any, body: bytes) -> Answer | None:
        if notify.url is not None:
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"ghhook/{ghhook.__version__}",
            }
            if notify.secret is not None:
                headers[SIGNATURE_HEADER] = sign(body, notify.secret)
            answer = await self._post(notify.url, body, headers)
            _judge(answer, "the notification's receiver", self._wall_clock())
            return answer
        assert notify.apprise_url is not None, "a notification has a url or an apprise_url"
        title, text = apprise_text(document)
        sending = self._in_thread(self._apprise, notify.apprise_url, title, text)
        sending.addTimeout(SEND_TIMEOUT, self._reactor)
        self._sending = sending
        try:
            sent = await sending
        except CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - Apprise's plugins raise anything
            raise Retry(f"Apprise failed: {_failure_words(e)}") from None
        finally:
            self._sending = None
        if not sent:
            raise Retry("Apprise could not send it")
        return None


def _judge(answer: Answer, who: str, now: float) -> None:
    """Raise :class:`Retry` or :class:`GiveUp` unless ``answer`` is a success."""
    if 200 <= answer.code < 300:
        return
    if 300 <= answer.code < 400:
        where = answer.headers.get("location", "")
        raise GiveUp(
            f"HTTP {answer.code} from {who}: a redirect{f' to {_origin(where)}' if where else ''},"
            " not followed (set the API's URL to where it answers)"
        )
    message = _message(answer.body)
    said = f"HTTP {answer.code} from {who}" + (f": {message}" if message else "")
    wait = _wait(answer, now)
    limited = answer.code == 429 or (
        answer.code == 403 and (wait is not None or "rate limit" in message.lower())
    )
    if limited:
        if wait is None and "secondary" in message.lower():
            wait = SECONDARY_WAIT
        raise Retry(said, wait, limited=True)
    if answer.code in _FINAL:
        raise GiveUp(said)
    raise Retry(said, wait)


def _wait(answer: Answer, now: float) -> float | None:
    """
    How long the forge asks to wait: ``Retry-After``, or GitHub's rate-limit
    reset; at least a second (a 0 would resend at once), at most WAIT_MOST.
    """
    retry_after = (answer.headers.get("retry-after") or "").strip()
    wait: float | None = None
    if retry_after:
        if _whole(retry_after):
            wait = float(retry_after)
        else:
            try:
                wait = email.utils.parsedate_to_datetime(retry_after).timestamp() - now
            except (TypeError, ValueError, OverflowError):
                return None
    elif answer.headers.get("x-ratelimit-remaining") == "0":
        reset = answer.headers.get("x-ratelimit-reset", "").strip()
        if _whole(reset):
            wait = float(reset) - now
    return None if wait is None else min(WAIT_MOST, max(1.0, wait))


def _whole(text: str) -> bool:
    """ASCII digits only, and not absurdly many: "²" is a digit to str.isdigit."""
    return text.isascii() and text.isdigit() and len(text) <= 12


def _message(body: bytes) -> str:
    """The forge's own words in an error answer (each forge puts them elsewhere)."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        text = body.decode("utf-8", "replace").strip()
        return printable(text[:200]) if text and "<" not in text[:1] else ""
    found: object = None
    if isinstance(document, dict):
        error = document.get("error")
        errors = document.get("errors")
        found = document.get("message")
        if found is None and isinstance(error, dict):
            found = error.get("message")
        if found is None and isinstance(error, str):
            found = error
        if found is None and isinstance(errors, list) and errors and isinstance(errors[0], dict):
            found = errors[0].get("message")
    return printable(str(found)[:200]) if found is not None else ""


def _origin(url: str) -> str:
    """A URL's scheme and host: what one forge's rate limit covers."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _answer(answer: Answer | None) -> str | None:
    """What a later report needs from this one's answer: a GitHub deployment's id."""
    if answer is None:
        return None
    try:
        document = json.loads(answer.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(document, dict) and isinstance(document.get("id"), int):
        return str(document["id"])
    return None


def _failure_words(error: BaseException) -> str:
    return describe_failure(error).replace(" (is ghhook listening there?)", "")


__all__ = ["Answer", "Outbox", "Poster", "ReportCounter", "TreqPoster", "apprise_notify"]
