"""A small closed-loop HTTP load generator, run as its own process (`python -m benchmarks.loadgen`).

Each client thread keeps one keep-alive connection and POSTs the same body back to back, for a number of
requests or a number of seconds. Prints one JSON object: latencies (s), errors, elapsed (s).
Loopback only: the host must be 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path


def client(
    args: argparse.Namespace, body: bytes, stop_at: float, out: list[float], errors: list[str]
) -> None:
    conn = http.client.HTTPConnection(args.host, args.port, timeout=30)
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
    done = 0
    while (args.requests and done < args.requests) or (not args.requests and time.monotonic() < stop_at):
        start = time.perf_counter()
        try:
            conn.request("POST", args.path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors.append(f"HTTP {response.status}")
        except (OSError, http.client.HTTPException) as exc:
            errors.append(type(exc).__name__)
            conn.close()
            conn = http.client.HTTPConnection(args.host, args.port, timeout=30)
        out.append(time.perf_counter() - start)
        done += 1
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--requests", type=int, default=0, help="per client (0: run for --seconds)")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    body = args.body.read_bytes()
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.monotonic() + args.seconds
    threads = [
        threading.Thread(target=client, args=(args, body, stop_at, latencies, errors))
        for _ in range(args.clients)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    json.dump({"latencies": latencies, "errors": errors, "elapsed": elapsed}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
