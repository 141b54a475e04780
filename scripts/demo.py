"""
`make demo`: ghhook's main job on a fresh machine, end to end.

Builds a throwaway bare remote, a clone and a tiny HTTP service running from
the clone; starts the real ``twistd -n ghhook`` on loopback; pushes a commit;
sends a signed delivery with ``python -m ghhook send``; shows the clone
updated and the service restarted on the new code; stops all it started.
Exits 0 only if the deploy happened.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.gitfixture import GitFixture  # noqa: E402

BIN = Path(sys.executable).parent
TICK = threading.Event()  # never set; wait() is a bounded poll's interval

SERVICE = ROOT / "tests" / "service.py"  # serves app.txt; its restart command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode().strip()
    except OSError:
        return 0, ""


def wait_for(what: str, predicate, within: float = 30.0) -> bool:
    for _ in range(int(within / 0.05)):
        if predicate():
            return True
        TICK.wait(0.05)
    print(f"demo: gave up waiting for {what}")
    return False


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="ghhook-demo-"))
    git = GitFixture.create(work)
    hook_port, service_port = free_port(), free_port()
    secret = work / "secret"
    secret.write_text(os.urandom(16).hex() + "\n")
    service_pid = work / "service.pid"
    restart_cmd = f"{sys.executable} {SERVICE} restart {service_pid} {service_port}"
    subprocess.run(restart_cmd.split(), cwd=git.clone, check=True, capture_output=True)
    service_url = f"http://127.0.0.1:{service_port}/"
    wait_for("the demo service", lambda: fetch(service_url)[0] == 200)

    say(f"throwaway remote, clone and service in {work}")
    print(f"clone HEAD {git.head()[:12]}, service answers: {fetch(service_url)[1]!r}")

    say("starting twistd -n ghhook on loopback")
    log_path = work / "ghhook.log"
    argv = [
        str(BIN / "twistd"),
        "-n",
        "--pidfile",
        str(work / "twistd.pid"),
        "ghhook",
        "--repo",
        str(git.clone),
        "--secret-file",
        str(secret),
        "--listen",
        f"tcp:{hook_port}:interface=127.0.0.1",
        "--admin-listen",
        "none",
        "--health-url",
        f"http://127.0.0.1:{service_port}/health",
        "--state",
        str(work / "ghhook.sqlite3"),
        "--restart-cmd",
        restart_cmd,
    ]
    print(" ".join(argv))
    log = open(log_path, "wb")
    daemon = subprocess.Popen(argv, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    ok = False
    try:
        hook = f"http://127.0.0.1:{hook_port}"
        if not wait_for("ghhook to listen", lambda: fetch(hook + "/healthz")[0] == 200):
            return 1
        print(f"ghhook answers on {hook}/github")

        say("pushing a commit: version 2")
        sha = git.commit_and_push("version 2\n")
        print(f"pushed {sha}")

        say("sending a signed push delivery with `python -m ghhook send`")
        send = subprocess.run(
            [
                sys.executable,
                "-m",
                "ghhook",
                "send",
                "--url",
                hook + "/github",
                "--secret-file",
                str(secret),
                "--event",
                "push",
                "--repo-dir",
                str(git.work),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        print(send.stdout.strip() or send.stderr.strip())
        if send.returncode != 0:
            return 1

        say("waiting for the deploy")
        deployed = wait_for("the clone to reach the pushed commit", lambda: git.head() == sha)
        restarted = wait_for(
            "the service to serve version 2", lambda: fetch(service_url)[1] == "version 2"
        )
        print(f"clone HEAD {git.head()[:12]} (pushed {sha[:12]})")
        print(f"service answers: {fetch(service_url)[1]!r}")
        ok = deployed and restarted
    finally:
        say("stopping what the demo started")
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()
        if service_pid.exists():
            try:
                os.kill(int(service_pid.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
        print("ghhook's log, the deploy's lines:")
        for line in log_path.read_text(errors="replace").splitlines():
            if "ghhook.deployer" in line or "restart:" in line or "accepted as deploy" in line:
                print("  " + line)
    say("demo " + ("succeeded: pushed, pulled, restarted" if ok else "FAILED"))
    if ok:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    else:
        print(f"left {work} for inspection")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
