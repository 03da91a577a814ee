"""Calling a rate-limited API whose limits the client is not told.

A local server (``layerflow.testing.FakeAPI``) allows 50 requests per 0.25 s (200/s) and
answers 429 with a Retry-After when over. 1,000 requests (coroutines, one shared httpx client)
for: layerflow with an adaptive limit; layerflow with a static limit set to the server's true
limit; aiometer with ``max_per_second`` at the true limit; a plain ``asyncio.Semaphore``.
The last two retry a 429 after its Retry-After, as people write it by hand. Then the server
halves its limit mid-run: how long until the adaptive limit is back near the new rate.

Then the official clients, ``openai.AsyncOpenAI(max_retries=0)`` and
``anthropic.AsyncAnthropic(max_retries=0)``, made once and shared by the run's coroutines,
against the same fake speaking their APIs (OpenAI's chat completions, Anthropic's messages,
429s with their headers and bodies) at ``SDK_RATE`` per ``WINDOW``: the clients spend a few
milliseconds of CPU per call, so the rate stays where one process can drive them. And the
same runs with 5% of the calls answered ``529 overloaded_error`` / ``503`` at random, against
the run without.
Usage: python bench/rate_limits.py [--requests 1000] [--only sdk]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import aiometer
import anthropic
import httpx
import openai

import layerflow as lf
from layerflow.testing import FakeAPI

RATE, WINDOW, LATENCY = 50, 0.25, 0.02
PER_SECOND = RATE / WINDOW
SDK_RATE = 25  # per WINDOW: 100/s
SDK_PER_SECOND = SDK_RATE / WINDOW
OVERLOAD = 0.05


async def _post(client: httpx.AsyncClient, url: str, k: int) -> httpx.Response:
    return await client.post(url + "/v1/complete", json={"prompt": f"section {k}", "max_tokens": 5})


def _flow(url: str, n: int, done: list[float]) -> lf.Flow:
    flow = lf.Flow("calls")
    clients: list[httpx.AsyncClient] = []

    @flow.task
    def prompts() -> list[int]:
        return list(range(n))

    @flow.task(map="prompts", rate_limit="llm")
    async def call(prompts: int) -> int:
        if not clients:
            clients.append(httpx.AsyncClient(timeout=30))
        r = await _post(clients[0], url, prompts)
        r.raise_for_status()  # a 429: push-back, the limit learns from it
        done.append(time.monotonic())
        return r.status_code

    return flow


def layerflow_run(limit: Any, n: int) -> tuple[float, int, int]:
    with FakeAPI(requests=RATE, window=WINDOW, latency=LATENCY) as api:
        flow = _flow(api.url, n, [])
        t0 = time.perf_counter()
        try:
            run = flow.run(rate_limits={"llm": limit})
            failed = run.counts().get("failed", 0)
        except lf.TaskFailed as e:
            failed = e.result.counts().get("failed", 0)
        return time.perf_counter() - t0, api.stats["rejected"], failed


async def _by_hand(n: int, wrap: Callable[[Callable[[], Any]], Any]) -> tuple[float, int, int]:
    with FakeAPI(requests=RATE, window=WINDOW, latency=LATENCY) as api:
        failed = 0
        async with httpx.AsyncClient(timeout=30) as client:

            async def one(k: int) -> None:
                nonlocal failed
                for _ in range(100):
                    r = await _post(client, api.url, k)
                    if r.status_code != 429:
                        return
                    await asyncio.sleep(float(r.headers.get("Retry-After", 1)))
                failed += 1

            t0 = time.perf_counter()
            await wrap([functools.partial(one, k) for k in range(n)])
            return time.perf_counter() - t0, api.stats["rejected"], failed


def aiometer_run(n: int) -> tuple[float, int, int]:
    async def wrap(jobs: list[Callable[[], Any]]) -> None:
        await aiometer.run_all(jobs, max_per_second=PER_SECOND)

    return asyncio.run(_by_hand(n, wrap))


def semaphore_run(n: int, size: int) -> tuple[float, int, int]:
    async def wrap(jobs: list[Callable[[], Any]]) -> None:
        sem = asyncio.Semaphore(size)

        async def bounded(job: Callable[[], Any]) -> None:
            async with sem:
                await job()

        await asyncio.gather(*(bounded(j) for j in jobs))

    return asyncio.run(_by_hand(n, wrap))


def halved(n: int, at: float = 2.0) -> None:
    """The server halves its limit ``at`` seconds in; completions per second afterwards."""
    with FakeAPI(requests=RATE, window=WINDOW, latency=LATENCY) as api:
        done: list[float] = []
        flow = _flow(api.url, n, done)
        t0 = time.monotonic()

        def halve() -> None:
            time.sleep(at)
            api.set_limits(requests=RATE // 2)

        threading.Thread(target=halve, daemon=True).start()
        run = flow.run(rate_limits={"llm": lf.Adaptive(start=4, max=64)})
        new_rate = PER_SECOND / 2
        after = sorted(t - t0 - at for t in done if t - t0 > at)
        # the first second-long span after the change from which on every span reaches the
        # new rate within 1.2x
        recovered = None
        for start in [x / 10 for x in range(0, 100)]:
            spans = [(s, s + 1.0) for s in [start + k * 0.5 for k in range(20)]]
            spans = [s for s in spans if s[1] <= (after[-1] if after else 0)]
            if spans and all(sum(a <= t < b for t in after) >= new_rate / 1.2 for a, b in spans):
                recovered = start
                break
        tail = (after[-1] - after[0]) / max(1, len(after) - 1) * new_rate if after else 0
        print(
            f"server halved to {new_rate:.0f}/s at {at:.0f} s: {run.status}, "
            f"{api.stats['rejected']} 429s in all; back within 1.2x of the new rate after "
            f"{'never' if recovered is None else f'{recovered:.1f} s'} (target <= 10 s); "
            f"after the change {tail:.2f}x the new ideal"
        )


def _sdk_flow(which: str, url: str, n: int) -> lf.Flow:
    """``n`` chat calls through one official async client, made once (lazily, on the
    run's loop) and shared by every coroutine."""
    flow = lf.Flow("sdk-calls")
    clients: list[Any] = []

    @flow.task
    def prompts() -> list[str]:
        return [f"section {k} of the report" for k in range(n)]

    if which == "openai":

        @flow.task(map="prompts", rate_limit="llm")
        async def call(prompts: str) -> int:
            if not clients:
                clients.append(openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0))
            reply = await clients[0].chat.completions.create(
                model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": prompts}]
            )
            return reply.usage.total_tokens

    elif which == "anthropic":

        @flow.task(map="prompts", rate_limit="llm")
        async def call(prompts: str) -> int:
            if not clients:
                clients.append(anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0))
            reply = await clients[0].messages.create(
                model="claude-sonnet-4-5",
                max_tokens=5,
                messages=[{"role": "user", "content": prompts}],
            )
            return reply.usage.output_tokens

    else:  # plain httpx with raise_for_status, as the README's first version shows

        @flow.task(map="prompts", rate_limit="llm")
        async def call(prompts: str) -> int:
            if not clients:
                clients.append(httpx.AsyncClient(timeout=30))
            r = await _post(clients[0], url, 0)
            r.raise_for_status()
            return r.status_code

    return flow


def sdk_run(which: str, n: int, overload: float = 0.0) -> tuple[float, dict[str, int], int]:
    """(seconds, the server's counts, failed tasks) of ``n`` calls with an adaptive limit."""
    with FakeAPI(
        requests=SDK_RATE, window=WINDOW, latency=LATENCY, overload=overload, seed=7
    ) as api:
        flow = _sdk_flow(which, api.url, n)
        t0 = time.perf_counter()
        run = flow.run(rate_limits={"llm": lf.Adaptive()}, fail_fast=False)
        return time.perf_counter() - t0, dict(api.stats), run.counts().get("failed", 0)


def sdk_ceiling(which: str, n: int = 300, at_once: int = 16) -> float:
    """Calls per second the client manages in this process against a server with no limit
    (``at_once`` at a time): what any pacing of it can reach at most."""
    with FakeAPI(requests=None, latency=LATENCY) as api:

        async def go() -> float:
            if which == "openai":
                c: Any = openai.AsyncOpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0)

                async def one() -> None:
                    await c.chat.completions.create(
                        model="m", max_tokens=5, messages=[{"role": "user", "content": "a b"}]
                    )
            else:
                c = anthropic.AsyncAnthropic(base_url=api.url, api_key="k", max_retries=0)

                async def one() -> None:
                    await c.messages.create(
                        model="m", max_tokens=5, messages=[{"role": "user", "content": "a b"}]
                    )

            await one()
            sem = asyncio.Semaphore(at_once)

            async def bounded() -> None:
                async with sem:
                    await one()

            t0 = time.perf_counter()
            await asyncio.gather(*(bounded() for _ in range(n)))
            took = time.perf_counter() - t0
            await c.close()
            return n / took

        return asyncio.run(go())


def sdk_rows(n: int, repeats: int) -> None:
    ideal = n / SDK_PER_SECOND
    print()
    print(
        f"official clients: {n:,} calls against the fake allowing {SDK_RATE} per {WINDOW} s "
        f"({SDK_PER_SECOND:.0f}/s), {LATENCY * 1000:.0f} ms each; ideal {ideal:.2f} s; "
        f"lf.Adaptive(), fail_fast=False; median of {repeats} runs"
    )
    for which in ("openai", "anthropic"):
        print(f"  {which} client alone, 16 at a time, no limit: {sdk_ceiling(which):.0f} calls/s")
    print(f"{'client':44} {'seconds':>8} {'/ideal':>7} {'429s':>6} {'failed':>7}")
    print("-" * 76)
    base: dict[str, float] = {}
    for which, label in (
        ("openai", "openai.AsyncOpenAI(max_retries=0)"),
        ("anthropic", "anthropic.AsyncAnthropic(max_retries=0)"),
        ("httpx", "httpx.AsyncClient + raise_for_status"),
    ):
        runs = sorted((sdk_run(which, n) for _ in range(repeats)), key=lambda r: r[0])
        seconds, stats, failed = runs[len(runs) // 2]
        base[which] = seconds
        print(
            f"{label:44} {seconds:8.2f} {seconds / ideal:6.2f}x "
            f"{stats['rejected']:6d} {max(r[2] for r in runs):7d}"
        )
    print("targets: <= 1.2x the ideal, 429s < 5% of calls, 0 failed")
    print()
    print(f"{OVERLOAD:.0%} of the calls answered overloaded (503, or 529 for anthropic) at random")
    print(f"{'client':44} {'seconds':>8} {'/none':>7} {'over':>6} {'429s':>6} {'failed':>7}")
    print("-" * 83)
    for which, label in (
        ("anthropic", "anthropic.AsyncAnthropic, 5% 529"),
        ("openai", "openai.AsyncOpenAI, 5% 503"),
        ("httpx", "httpx + raise_for_status, 5% 503"),
    ):
        runs = sorted((sdk_run(which, n, OVERLOAD) for _ in range(repeats)), key=lambda r: r[0])
        seconds, stats, failed = runs[len(runs) // 2]
        print(
            f"{label:44} {seconds:8.2f} {seconds / base[which]:6.2f}x {stats['overloaded']:6d} "
            f"{stats['rejected']:6d} {max(r[2] for r in runs):7d}"
        )
    print("target: <= 1.3x the run without overloads, 0 failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="runs per official-client row")
    parser.add_argument("--only", choices=["sdk"], help="only the official clients' rows")
    args = parser.parse_args()
    n = args.requests
    if args.only == "sdk":
        sdk_rows(n, args.repeats)
        return
    ideal = n / PER_SECOND
    print(
        f"{n:,} requests against a server allowing {RATE} per {WINDOW} s ({PER_SECOND:.0f}/s), "
        f"{LATENCY * 1000:.0f} ms each; ideal {ideal:.2f} s"
    )
    print(f"{'client':44} {'seconds':>8} {'/ideal':>7} {'429s':>6} {'failed':>7}")
    print("-" * 76)
    rows = [
        ("layerflow lf.Adaptive(start=4, max=64)", lambda: layerflow_run(lf.Adaptive(), n)),
        (
            f"layerflow static {RATE}/{WINDOW}s (the true limit)",
            lambda: layerflow_run(f"{RATE}/{WINDOW}s", n),
        ),
        (f"aiometer max_per_second={PER_SECOND:.0f} + retry", lambda: aiometer_run(n)),
        ("asyncio.Semaphore(8) + retry", lambda: semaphore_run(n, 8)),
    ]
    for label, fn in rows:
        seconds, rejected, failed = fn()
        print(f"{label:44} {seconds:8.2f} {seconds / ideal:6.2f}x {rejected:6d} {failed:7d}")
    print("targets for adaptive: 0 failed, <= 1.15x the ideal, 429s < 5% of requests")
    halved(int(n * 1.5))
    sdk_rows(n, args.repeats)


if __name__ == "__main__":
    main()
