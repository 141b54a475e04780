"""The JSON-lines log observer, on real events and under the real twistd."""

from __future__ import annotations

import datetime
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import pytest
from twisted.logger import ILogObserver, Logger
from twisted.python import log as legacy_log

from ghhook.jsonlog import JSONLineObserver, event_record, observer
from tests.gitfixture import GitFixture

ROOT = Path(__file__).resolve().parent.parent
TWISTD = Path(sys.executable).parent / "twistd"


def logged(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line of ``stream`` as JSON; fails on a line that is not."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_structured_event_is_one_json_line() -> None:
    stream = io.StringIO()
    log = Logger(namespace="ghhook.test", observer=JSONLineObserver(stream))
    before = time.time()
    log.info(
        "pull of {sha} finished with {code}",
        sha="a" * 40,
        code=0,
        tags=("x", "y"),
        detail={"steps": [1, 2]},
        nothing=None,
        handle=object(),
        data=b"raw",
        ratio=float("nan"),
    )
    assert stream.getvalue().count("\n") == 1
    [record] = logged(stream)
    assert record == {
        "time": record["time"],
        "level": "info",
        "namespace": "ghhook.test",
        "text": f"pull of {'a' * 40} finished with 0",
        "sha": "a" * 40,
        "code": 0,
        "tags": ["x", "y"],
        "detail": {"steps": [1, 2]},
        "nothing": None,
    }
    moment = datetime.datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    assert moment.utcoffset() == datetime.timedelta(0)
    assert before - 1 <= moment.timestamp() <= time.time() + 1


def test_control_characters_are_json_escapes_and_come_back_as_they_were() -> None:
    """A field nobody escaped (an ANSI escape, DEL, CSI as a C1 control) stays off the terminal."""
    stream = io.StringIO()
    log = Logger(namespace="ghhook.test", observer=JSONLineObserver(stream))
    raw = "red\x1b[31m\x1b]0;pwned\x07\x7f\x9b2J\u2028\r"
    log.info("{step}: {line}", step="build", line=raw)
    line = stream.getvalue()
    assert all(" " <= ch <= "~" for ch in line[:-1]) and line.endswith("}\n"), line
    [record] = logged(stream)
    assert record["line"] == raw and record["text"] == f"build: {raw}"


def test_a_failure_becomes_a_traceback_field() -> None:
    stream = io.StringIO()
    log = Logger(namespace="ghhook.deployer", observer=JSONLineObserver(stream))
    try:
        1 / 0  # noqa: B018 - the error is the point
    except ZeroDivisionError:
        log.failure("deploy {deploy} crashed", deploy=7)
    [record] = logged(stream)
    assert record["level"] == "critical"
    assert record["namespace"] == "ghhook.deployer"
    assert record["text"] == "deploy 7 crashed"
    assert record["deploy"] == 7
    assert "ZeroDivisionError" in record["traceback"]
    assert "Traceback" in record["traceback"]
    assert not any(key.startswith("log_") for key in record)


def test_fields_never_replace_the_fixed_keys() -> None:
    record = event_record(
        {
            "log_format": "{text} at {level}",
            "log_namespace": "n",
            "log_time": 0.0,
            "text": "field",
            "level": 3,
            "time": "then",
        }
    )
    assert record == {
        "time": "1970-01-01T00:00:00.000000Z",
        "level": "info",
        "namespace": "n",
        "text": "field at 3",
    }


def test_old_style_events_lose_their_legacy_keys() -> None:
    stream = io.StringIO()
    publisher = legacy_log.LogPublisher()
    publisher.addObserver(JSONLineObserver(stream))
    publisher.msg("Site starting on", 8000, system="HTTPChannel,0")
    try:
        raise KeyError("k")
    except KeyError:
        publisher.msg(failure=legacy_log.failure.Failure(), why="a legacy error", isError=1)
    started, failed = logged(stream)
    assert started == {
        "time": started["time"],
        "level": "info",
        "namespace": "log_legacy",
        "text": "Site starting on 8000",
    }
    assert failed["level"] == "critical"
    assert failed["text"] == "a legacy error"
    assert "KeyError" in failed["traceback"]
    assert set(failed) == {"time", "level", "namespace", "text", "traceback"}


def test_the_factory_writes_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    made = observer()
    assert ILogObserver.providedBy(made)
    Logger(namespace="ghhook.test", observer=made).warn("careful: {what}", what="x")
    out = capsys.readouterr().out
    assert json.loads(out)["text"] == "careful: x"
    assert json.loads(out)["level"] == "warn"


def eventually_healthy(url: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(url, timeout=within) as answer:
                assert answer.status == 200
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            threading.Event().wait(0.05)  # a bounded poll's interval


def _lines(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


@pytest.mark.e2e
def test_twistd_logs_json_lines_with_this_observer(git: GitFixture, tmp_path: Path) -> None:
    if not TWISTD.exists():
        pytest.skip(f"no twistd next to {sys.executable}")
    env = {k: v for k, v in os.environ.items() if k not in ("GHHOOK_SECRET", "GITHUB_SECRET")}
    env.update(PYTHONPATH=str(ROOT), GHHOOK_SECRET="json log secret")
    argv = [str(TWISTD), "--logger", "ghhook.jsonlog.observer", "-n", "--pidfile="]
    argv += ["ghhook", "--repo", str(git.clone), "--listen", "tcp:0:interface=127.0.0.1"]
    argv += ["--admin-listen", "none"]
    process = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, lines), daemon=True).start()
    records: list[dict[str, Any]] = []

    def read_until(text: str, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while not any(text in r["text"] for r in records):
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {within} s: {records}") from None
            if line is None:
                raise AssertionError(f"twistd exited before {text!r}: {records}")
            records.append(json.loads(line))

    try:
        read_until("ghhook serving")
        port = next(int(r["text"].rsplit(" ", 1)[1]) for r in records if "starting on" in r["text"])
        # Answering means the reactor runs and handles SIGTERM; before, the
        # signal would kill the process outright.
        eventually_healthy(f"http://127.0.0.1:{port}/healthz")
        process.send_signal(signal.SIGTERM)
        read_until("Server Shut Down.")
        # twistd ends by re-raising the signal it stopped on, as systemd expects.
        assert process.wait(timeout=30) == -signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        assert process.stderr is not None
        stderr = process.stderr.read()
        process.stderr.close()
        assert process.stdout is not None
        process.stdout.close()
    assert stderr == ""
    assert any(r["text"] == "ghhook serving 1 app: clone" for r in records)
    serving = next(r for r in records if r["text"].startswith("clone: serving "))
    assert serving["namespace"] == "ghhook.deployer" and serving["app"] == "clone"
    assert serving["repo"] == str(git.clone)
    assert serving["branch"] == "main"
    queued = next(r for r in records if "deploy" in r and r["namespace"] == "ghhook.deployer")
    assert queued["deploy"] == 1 and queued["trigger"] == "catch-up"
    assert all(set(r) >= {"time", "level", "namespace", "text"} for r in records)
    assert "json log secret" not in json.dumps(records)
