#!/usr/bin/env python3
"""
How long the worst signed 25 MB delivery blocks the reactor in
``parse_body``. A sender with the secret can choose the body's shape, so
the shape that costs most per byte is the one to measure:

- a form of empty fields (``a=``), with ``payload`` first or last: once
  8 million fields took 6 s in ``parse_qs``;
- a form whose payload is all percent escapes (every byte decoded);
- a JSON object of 2 million keys: this is the cost of ``json.loads`` itself.

Each case runs ``--runs`` times and the best run is kept. Prints one JSON
line per case (``parse_case_s``), then the worst form case
(``parse_worst_form_s``) and the JSON case (``parse_worst_json_s``); the
exit status is 0 whenever it ran.

    .venv/bin/python bench/parse_worst.py
    .venv/bin/python bench/parse_worst.py --runs 1
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ghhook.delivery import FORM_TYPE, parse_body  # noqa: E402
from ghhook.site import MAX_BODY  # noqa: E402


def empty_fields(payload_last: bool) -> bytes:
    """A form of as many ``a=`` fields as fit in MAX_BODY, beside ``payload={}``."""
    payload = b"payload=%7B%7D"
    fields = b"&a=" * ((MAX_BODY - len(payload)) // 3)
    return fields[1:] + b"&" + payload if payload_last else payload + fields


def escaped_payload() -> bytes:
    """A form whose payload, ``{"s": "AAA..."}``, is percent escapes to MAX_BODY."""
    head, tail = b"payload=%7B%22s%22%3A%22", b"%22%7D"
    return head + b"%41" * ((MAX_BODY - len(head) - len(tail)) // 3) + tail


def json_keys(keys: int = 2_000_000) -> bytes:
    """A JSON object of ``keys`` distinct keys (about 23 MB)."""
    return b"{" + b",".join(b'"%d":0' % i for i in range(keys)) + b"}"


def best_of(runs: int, call: Callable[[], object]) -> float:
    """The fastest of ``runs`` calls, in seconds (each after a full collection)."""
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per case; the best is kept")
    args = parser.parse_args()

    cases = [
        ("parse_worst_form_s", "empty fields, payload first", empty_fields(False), FORM_TYPE),
        ("parse_worst_form_s", "empty fields, payload last", empty_fields(True), FORM_TYPE),
        ("parse_worst_form_s", "a payload of percent escapes", escaped_payload(), FORM_TYPE),
        ("parse_worst_json_s", "an object of 2,000,000 keys", json_keys(), "application/json"),
    ]
    worst: dict[str, dict[str, Any]] = {}
    for figure, case, body, content_type in cases:
        seconds = best_of(args.runs, lambda: parse_body(body, content_type))  # noqa: B023
        line = {"figure": figure, "value": round(seconds, 3), "case": case, "bytes": len(body)}
        print(json.dumps({**line, "figure": "parse_case_s"}), flush=True)
        if figure not in worst or line["value"] > worst[figure]["value"]:
            worst[figure] = line
    for line in worst.values():
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
