"""The Python load generator: single-record requests, pre-encoded, over HTTP (aiohttp) or gRPC (grpc.aio).

Two shapes of load, each bounded in requests and in time:

- ``open_loop``: requests sent at a fixed rate whatever the answers do (request ``i`` is due at
  ``start + i / rate``), as a population of independent callers sends them. A request's latency is
  counted from when it was due, not from when it was sent, so a client that falls behind shows up in
  the latency instead of hiding it (no coordinated omission).
- ``closed_loop``: ``clients`` callers, each sending its next request when the last one is answered:
  the most the server answers at that concurrency. Each caller's first request (it opens the
  connection) is not counted. The benchmark's closed loops run on the C generators
  (``bench.online.generators``) when they are installed; this one is the fallback, and the warm-up.

The clients are chosen to take as little of the shared CPU as they can: the bodies are encoded once,
before any timing; answers are not decoded (only the status is read: an HTTP status other than 200 or
a gRPC status other than OK is an error, counted by kind); HTTP runs on aiohttp over uvloop, gRPC on
``grpc.aio`` with one coroutine per caller. gRPC calls go round-robin over ``Target.channels``
channels, each its own HTTP/2 connection: under ``scoring serve --workers N`` the kernel hands each
connection to one worker, so one channel would load one worker only.

Every load reports the CPU time this process spent on it, so that what the load generator took from
the server's two cores is measured, not guessed. Python's cyclic garbage collector is off during a
load (``quiet_gc``): a full collection of this process (MLflow and scikit-learn are imported to make
the model) pauses every caller for tens of milliseconds, which would count as the server's latency.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

# The longest one request may take before it counts as an error ("timeout").
REQUEST_TIMEOUT_S = 10.0
# How long an open loop waits for its last answers once every request is sent.
DRAIN_S = 10.0
# gRPC channels (connections) of a load: enough that 2 workers both get some with near certainty
# (each connection lands on one of them at random: all 8 on one, 1 time in 128).
GRPC_CHANNELS = 8


@dataclass(frozen=True)
class Target:
    """Where one kind of request goes, and its pre-encoded bodies.

    Attributes:
        protocol: ``http`` or ``grpc``.
        address: ``http://HOST:PORT/PATH`` (HTTP) or ``HOST:PORT`` (gRPC).
        bodies: Request bodies (JSON bytes, or serialized protobuf messages), sent round-robin.
        method: The gRPC method's full name, ``/package.Service/Method``.
        channels: gRPC only: the connections the calls go round-robin over.
    """

    protocol: str
    address: str
    bodies: Sequence[bytes]
    method: str = ""
    channels: int = GRPC_CHANNELS


@dataclass
class Tally:
    """What a load saw: latencies of the answered requests, and errors by kind.

    Attributes:
        latencies_s: One per successful request, in seconds.
        errors: Count per kind (``http 503``, ``grpc UNAVAILABLE``, ``timeout``, an exception's type).
        sent: Requests sent (counted ones only).
        elapsed_s: From the first counted request to the last answer.
        cpu_s: CPU time (user + system) this process spent meanwhile, all its threads.
        lag_max_s: Open loop only: how late the client sent its latest request.
        uncounted: Requests sent besides the counted ones (each closed-loop caller's first): the
            server's CPU time covers them too.
    """

    latencies_s: list[float] = field(default_factory=list)
    errors: collections.Counter = field(default_factory=collections.Counter)
    sent: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    lag_max_s: float = 0.0
    uncounted: int = 0

    def summary(self) -> dict:
        """Counts, rate and latency percentiles (milliseconds) as ``results.json`` keeps them."""
        ok = len(self.latencies_s)
        lat = np.asarray(self.latencies_s) * 1000.0
        pct = (lambda q: float(np.percentile(lat, q))) if ok else (lambda q: None)
        return {
            "sent": self.sent,
            "ok": ok,
            "errors": int(sum(self.errors.values())),
            "error_kinds": dict(self.errors),
            "elapsed_s": self.elapsed_s,
            "answered_per_s": ok / self.elapsed_s if self.elapsed_s > 0 else None,
            "p50_ms": pct(50),
            "p90_ms": pct(90),
            "p99_ms": pct(99),
            "max_ms": float(lat.max()) if ok else None,
            "mean_ms": float(lat.mean()) if ok else None,
            "client_cpu_s": self.cpu_s,
            "client_lag_max_ms": self.lag_max_s * 1000.0,
            "uncounted": self.uncounted,
        }


def open_loop(target: Target, rate: float, requests: int, seconds: float) -> Tally:
    """Send ``requests`` requests (fewer when ``seconds`` runs out) at ``rate`` per second.

    Args:
        target: Where to send, and what.
        rate: Requests per second, whatever the answers do.
        requests: The most requests to send.
        seconds: The longest the sending lasts; the answers then get ``DRAIN_S`` more.
    """
    count = max(1, min(requests, int(rate * seconds)))
    with quiet_gc():
        return _run_async(target, lambda send: _async_open(send, rate, count))


def closed_loop(target: Target, clients: int, requests: int, seconds: float) -> Tally:
    """``clients`` callers send requests back to back until ``requests`` are sent or ``seconds`` pass.

    Args:
        target: Where to send, and what.
        clients: Concurrent callers, each with at most one request in flight.
        requests: The most requests to send, over all callers (besides each one's uncounted first).
        seconds: The longest the load lasts; requests in flight then are waited for.
    """
    with quiet_gc():
        return _run_async(target, lambda send: _async_closed(send, clients, requests, seconds))


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """No cyclic garbage collection during a load; one collection before it and one after.

    A load is bounded (a few thousand requests), and what it allocates is freed by reference counting;
    a full collection in the middle of it would pause every caller at once and count as latency.
    """
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()


# A sender: awaits one request with the body of that index; returns None when it succeeded, else the
# kind of error.
Send = Callable[[int], Awaitable[str | None]]


def _run_async(target: Target, load: Callable[[Send], Awaitable[Tally]]) -> Tally:
    if target.protocol == "http":
        import uvloop

        return uvloop.run(_with_http(target, load))
    # grpc.aio runs its own poller on the standard event loop.
    return asyncio.run(_with_aio_grpc(target, load))


async def _with_http(target: Target, load: Callable[[Send], Awaitable[Tally]]) -> Tally:
    import aiohttp

    bodies = target.bodies
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)
    ) as s:

        async def send(i: int) -> str | None:
            try:
                async with s.post(target.address, data=bodies[i % len(bodies)], headers=headers) as answer:
                    await answer.read()
                    return None if answer.status == 200 else f"http {answer.status}"
            except TimeoutError:
                return "timeout"
            except aiohttp.ClientError as e:
                return type(e).__name__

        return await load(send)


async def _with_aio_grpc(target: Target, load: Callable[[Send], Awaitable[Tally]]) -> Tally:
    import grpc

    bodies = target.bodies
    # Channels to one address share one connection unless each has a subchannel pool of its own.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(target.address, options=options) for _ in range(target.channels)]
    try:
        # No serializers: the bodies are serialized messages already, and answers stay bytes.
        calls = [channel.unary_unary(target.method) for channel in channels]
        # Connected before the load: no counted call pays a connection's set-up.
        await asyncio.wait_for(
            asyncio.gather(*(channel.channel_ready() for channel in channels)), REQUEST_TIMEOUT_S
        )

        async def send(i: int) -> str | None:
            try:
                await calls[i % len(calls)](bodies[i % len(bodies)], timeout=REQUEST_TIMEOUT_S)
            except grpc.aio.AioRpcError as e:
                return "timeout" if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED else f"grpc {e.code().name}"
            return None

        return await load(send)
    finally:
        for channel in channels:
            await channel.close()


async def _async_open(send: Send, rate: float, count: int) -> Tally:
    tally = Tally()

    async def one(i: int, due: float) -> None:
        error = await send(i)
        if error is None:
            tally.latencies_s.append(time.perf_counter() - due)
        else:
            tally.errors[error] += 1

    cpu = time.process_time()
    start = time.perf_counter() + 0.01
    tasks = []
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tally.lag_max_s = max(tally.lag_max_s, time.perf_counter() - due)
        tasks.append(asyncio.ensure_future(one(i, due)))
    tally.sent = count
    _, late = await asyncio.wait(tasks, timeout=DRAIN_S)
    for task in late:
        task.cancel()
    tally.errors.update({"timeout": len(late)} if late else {})
    tally.elapsed_s = time.perf_counter() - start
    tally.cpu_s = time.process_time() - cpu
    return tally


async def _async_closed(send: Send, clients: int, requests: int, seconds: float) -> Tally:
    tally = Tally()
    numbers = itertools.count()
    go = asyncio.Event()
    clock = {"opened": 0, "start": 0.0, "deadline": 0.0, "cpu": 0.0}

    async def caller(k: int) -> None:
        await send(k)  # opens this caller's connection; not counted
        clock["opened"] += 1
        if clock["opened"] == clients:  # the last one to open starts the clock for all
            clock["cpu"], clock["start"] = time.process_time(), time.perf_counter()
            clock["deadline"] = clock["start"] + seconds
            go.set()
        await go.wait()
        while (i := next(numbers)) < requests and time.perf_counter() < clock["deadline"]:
            tally.sent += 1
            sent = time.perf_counter()
            error = await send(i)
            if error is None:
                tally.latencies_s.append(time.perf_counter() - sent)
            else:
                tally.errors[error] += 1

    await asyncio.gather(*(caller(k) for k in range(clients)))
    tally.uncounted = clients
    tally.elapsed_s = time.perf_counter() - clock["start"]
    tally.cpu_s = time.process_time() - clock["cpu"]
    return tally
