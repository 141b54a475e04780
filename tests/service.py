"""
A tiny service that runs from a clone, for the demo and the pipeline tests.

``service.py serve PORT`` answers ``GET /`` with the app.txt it started with
and ``GET /health`` with 200, or 500 when that text says "broken".
``service.py restart PIDFILE PORT`` (run in the clone) stops the service
named by PIDFILE and starts a new one, detached, as a restart command does.
``service.py hup-counter FILE`` writes its pid to FILE and appends a line to
FILE.hups on every SIGHUP (for signal restarts).
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
from pathlib import Path


def serve(port: int) -> None:
    text = Path("app.txt").read_text().strip()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            healthy = "broken" not in text
            code = 200 if self.path != "/health" or healthy else 500
            body = (text if self.path != "/health" else ("ok" if healthy else "broken")).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body) + 1))
            self.end_headers()
            self.wfile.write(body + b"\n")

        def log_message(self, *args: object) -> None:
            pass

    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()


def restart(pidfile: Path, port: str) -> None:
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
    service = subprocess.Popen(
        [sys.executable, __file__, "serve", port],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pidfile.write_text(str(service.pid))
    print(f"service restarted as pid {service.pid} on port {port}")


def hup_counter(pidfile: Path) -> None:
    hups = pidfile.with_suffix(".hups")

    def on_hup(signum: int, frame: object) -> None:
        with hups.open("a") as f:
            f.write("HUP\n")

    signal.signal(signal.SIGHUP, on_hup)
    pidfile.write_text(str(os.getpid()))
    while True:
        signal.pause()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "serve":
        serve(int(args[0]))
    elif command == "restart":
        restart(Path(args[0]), args[1])
    elif command == "hup-counter":
        hup_counter(Path(args[0]))
    else:
        sys.exit(f"service.py: unknown command {command!r}")
