"""The load driver: a process of its own, N concurrent keep-alive clients, one scenario.

    python -m bench.load --url http://127.0.0.1:8765 --plan plan.json --scenario read

A plan (JSON, written by bench.run) names each scenario's requests. A deliberately small
HTTP/1.1 client (asyncio streams, prebuilt request bytes) keeps the driver's own cost low,
so that on a two-core machine the server, not the driver, is what is measured. Prints one
JSON line: requests, errors, throughput and latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
import uuid
from urllib.parse import urlsplit


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        if self.reader is None:
            raise ConnectionError("not connected")
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        if headers.get(b"connection") == b"close":
            self.writer.close()
            self.writer = None
        return status, headers, body


def build(method: str, host: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Scenario:
    """Yields the next request's bytes; `ok` says whether a status counts as success."""

    def __init__(self, name: str, plan: dict, host: str) -> None:
        self.name, self.plan, self.host = name, plan, host
        self.ok = {200, 201}
        auth = lambda role: {"Authorization": f"Bearer {plan['tokens'][role]}"}  # noqa: E731
        json_type = {"Content-Type": "application/json"}
        if name == "ceiling":
            self.next = lambda: build("GET", host, "/livez", {})
        elif name == "login":
            form = plan["login_form"].encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            self.next = lambda: build("POST", host, "/api/v1/auth/token", headers, form)
        elif name == "read":
            ids = itertools.cycle(plan["read_ids"])
            self.next = lambda: build(
                "GET", host, f"/api/v1/cases/{next(ids)}", auth("coordinator")
            )
        elif name == "list":
            self.next = lambda: build("GET", host, "/api/v1/cases?limit=50", auth("coordinator"))
        elif name == "intake":
            body = json.dumps(plan["referral"]).encode()
            self.next = lambda: build(
                "POST",
                host,
                "/api/v1/referrals",
                {**auth("referrer"), **json_type, "Idempotency-Key": uuid.uuid4().hex},
                body,
            )
        elif name == "transition":
            ids = iter(plan["transition_ids"])
            body = json.dumps({"to": "screening"}).encode()
            self.next = lambda: build(
                "POST",
                host,
                f"/api/v1/cases/{next(ids)}/transitions",
                {**auth("coordinator"), **json_type, "If-Match": '"1"'},
                body,
            )
        elif name == "stats":
            self.next = lambda: build("GET", host, plan["stats_path"], auth("national_analyst"))
        else:
            raise SystemExit(f"unknown scenario {name}")


async def client(conn: Connection, scenario: Scenario, until: float, warm: float, out: dict):
    while True:
        try:
            raw = scenario.next()
        except StopIteration:  # a scenario that consumes its targets ran out of them
            return
        started = time.perf_counter()
        if started >= until:
            return
        status, _headers, _body = await conn.request(raw)
        ended = time.perf_counter()
        if started < warm:
            continue
        out["latencies"].append(ended - started)
        if status not in scenario.ok:
            out["errors"][status] = out["errors"].get(status, 0) + 1


async def drive(url: str, plan: dict, name: str, clients: int, seconds: float, warmup: float):
    parts = urlsplit(url)
    scenario = Scenario(name, plan, parts.netloc)
    out: dict = {"latencies": [], "errors": {}}
    connections = [Connection(parts.hostname, parts.port) for _ in range(clients)]
    start = time.perf_counter()
    warm, until = start + warmup, start + warmup + seconds
    await asyncio.gather(*(client(c, scenario, until, warm, out) for c in connections))
    measured = min(time.perf_counter(), until) - warm
    latencies = sorted(out["latencies"])
    n = len(latencies)

    def pct(p: float) -> float:
        return round(latencies[min(n - 1, int(p * n))] * 1000, 2) if n else 0.0

    return {
        "scenario": name,
        "clients": clients,
        "seconds": round(measured, 2),
        "requests": n,
        "errors": out["errors"],
        "throughput_rps": round(n / measured, 1) if measured > 0 else 0.0,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    args = parser.parse_args()
    with open(args.plan) as handle:
        plan = json.load(handle)
    result = asyncio.run(
        drive(args.url, plan, args.scenario, args.clients, args.seconds, args.warmup)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
