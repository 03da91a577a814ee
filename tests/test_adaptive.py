"""Adaptive limits, push-back from real HTTP 429s, and token accounting, through the public
API, against a local rate-limited server (``layerflow.testing.FakeAPI``) on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from email.utils import formatdate

import httpx
import pytest

import layerflow as lf
from layerflow.pushback import retry_after_of
from layerflow.testing import FakeAPI


def _calls(api: FakeAPI, n: int, *, coroutine: bool) -> lf.Flow:
    flow = lf.Flow("calls")
    in_flight = [0, 0]  # now, peak
    lock = threading.Lock()

    @flow.task
    def prompts() -> list[str]:
        return [f"section {k} of the document" for k in range(n)]

    body = {"max_tokens": 10}
    shared = httpx.Client(timeout=30)  # one pool of connections (a new Client per call
    # builds an SSL context each time: slower than the server)
    clients: list[httpx.AsyncClient] = []
    if coroutine:

        @flow.task(map="prompts", rate_limit="llm")
        async def call(prompts: str) -> int:
            if not clients:  # made on the run's event loop, shared by its coroutines
                clients.append(httpx.AsyncClient(timeout=30))
            r = await clients[0].post(api.url + "/v1/complete", json={"prompt": prompts, **body})
            r.raise_for_status()  # a 429 raises httpx.HTTPStatusError: push-back
            return r.json()["usage"]["total_tokens"]

    else:

        @flow.task(map="prompts", rate_limit="llm")
        def call(prompts: str) -> int:
            with lock:
                in_flight[0] += 1
                in_flight[1] = max(in_flight[1], in_flight[0])
            try:
                r = shared.post(api.url + "/v1/complete", json={"prompt": prompts, **body})
                r.raise_for_status()
                return r.json()["usage"]["total_tokens"]
            finally:
                with lock:
                    in_flight[0] -= 1

    flow.peak = in_flight  # type: ignore[attr-defined]
    return flow


@pytest.mark.parametrize("coroutine", [False, True], ids=["threads", "coroutines"])
def test_an_adaptive_limit_finds_the_servers_capacity_without_failures(coroutine):
    with FakeAPI(requests=20, window=0.25, latency=0.02) as api:
        flow = _calls(api, 150, coroutine=coroutine)
        run = flow.run(rate_limits={"llm": lf.Adaptive(start=2, max=12)})
        assert run.ok, run.summary()
        assert run.counts()["succeeded"] == 152  # prompts, the map and its 150 calls
        assert api.stats["ok"] == 150
        # it pushed against the limit (some 429s) and learnt from them (not one per call)
        assert 0 < api.stats["rejected"] < 60
    if not coroutine:
        assert flow.peak[1] <= 12  # never more at once than max


def test_an_http_429_does_not_spend_a_tasks_retries():
    with FakeAPI(requests=1, window=0.3, latency=0.0) as api:
        flow = lf.Flow()

        def hit(k: int):
            def call() -> int:
                r = httpx.post(api.url + "/v1/complete", json={"prompt": "x", "max_tokens": 1})
                r.raise_for_status()
                return k

            return call

        for k in range(3):
            flow.add(hit(k), name=f"c{k}", retries=0)
        run = flow.run(max_workers=3)  # no limit declared: the 429s alone slow it down
        assert run.ok, run.summary()
        assert api.stats["rejected"] >= 1
        assert max(run.tasks[f"c{k}"].attempts for k in range(3)) >= 2


def test_retry_after_pauses_every_task_on_the_key():
    times: dict[str, float] = {}
    flow = lf.Flow()

    @flow.task(rate_limit="api")
    def first() -> str:
        if "pushed" not in times:
            times["pushed"] = time.monotonic()
            raise lf.RateLimited("slow down", retry_after=0.5)
        return "ok"

    @flow.task
    def tick() -> None:
        time.sleep(0.1)  # "later" becomes ready while the key is paused

    @flow.task(rate_limit="api")
    def later(tick: None) -> str:
        times["later"] = time.monotonic()
        return "ok"

    run = flow.run(rate_limits={"api": lf.Adaptive(start=2, max=2)})
    assert run.ok, run.summary()
    assert run.tasks["first"].attempts == 2
    assert times["later"] - times["pushed"] >= 0.45  # held by the pause, though not pushed


def test_a_task_that_is_always_pushed_back_fails_in_the_end():
    flow = lf.Flow()

    @flow.task(rate_limit="api")
    def never() -> None:
        raise lf.RateLimited("no", retry_after=0)

    with pytest.raises(lf.TaskFailed) as failed:
        flow.run(rate_limits={"api": lf.Adaptive(start=1)})
    run = failed.value.result
    assert run.status == "failed"
    assert isinstance(run.tasks["never"].error, lf.RateLimited)
    assert run.tasks["never"].attempts == 101


def test_real_token_usage_corrects_the_window():
    flow = lf.Flow()

    def ask(k: int):
        def call() -> int:
            lf.usage("tokens", 10)  # declared 50, really used 10
            return k

        return call

    for k in range(6):
        flow.add(ask(k), name=f"ask{k}", rate_limit={"tokens": 50})
    t0 = time.monotonic()
    run = flow.run(max_workers=1, rate_limits={"tokens": "100/20s"})
    assert run.ok
    # by the estimates only two fit in 20 s; by what they used, all six do at once
    assert time.monotonic() - t0 < 10
    assert run.tasks["ask0"].metrics == {"tokens": 10}


def test_adaptive_options_are_checked():
    with pytest.raises(lf.InvalidOptionError, match="min <= start <= max"):
        lf.Adaptive(start=10, max=4)
    with pytest.raises(lf.InvalidOptionError, match="start must be a whole number"):
        lf.Adaptive(start=0)
    with pytest.raises(lf.InvalidOptionError, match="rate:"):
        lf.Adaptive(rate="fast")
    with pytest.raises(lf.InvalidOptionError, match="lf.usage takes a rate limit"):
        lf.usage(3, 1)  # type: ignore[arg-type]


def test_the_plan_names_an_adaptive_limit_and_predicts_with_it():
    flow = lf.Flow()
    for k in range(4):
        flow.add(lambda: None, name=f"t{k}", rate_limit="llm")
    plan = flow.plan()
    limits = {"llm": lf.Adaptive(start=2, max=8)}
    (line,) = plan.binding_limits(rate_limits=limits)
    assert "adaptive, 2 to 8 at once" in line
    # as the run would: start at two at once (their starts spaced out), not one at a time
    predicted = plan.simulate({f"t{k}": 1.0 for k in range(4)}, rate_limits=limits)
    assert 2.0 <= predicted < 3.0


class _AiohttpLike(Exception):
    """Shaped like aiohttp.ClientResponseError (not installed here)."""

    __module__ = "aiohttp.client_exceptions"

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers


def _httpx_error(status: int, headers: dict[str, str]) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://127.0.0.1/")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError("error", request=request, response=response)


def test_push_back_is_read_from_http_errors():
    assert retry_after_of(_httpx_error(429, {"Retry-After": "2"})) == 2.0
    assert retry_after_of(_httpx_error(503, {"retry-after": "0.25"})) == 0.25
    assert retry_after_of(_httpx_error(429, {"retry-after-ms": "150"})) == 0.15
    assert retry_after_of(_httpx_error(429, {})) == 1.0  # no header: a default wait
    date = formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_of(_httpx_error(429, {"Retry-After": date})) <= 30  # type: ignore[operator]
    assert retry_after_of(_httpx_error(429, {"Retry-After": "soon"})) == 1.0
    assert retry_after_of(_httpx_error(429, {"Retry-After": "99999999"})) == 600.0
    assert retry_after_of(_httpx_error(500, {"Retry-After": "2"})) is None
    assert retry_after_of(_httpx_error(404, {})) is None
    assert retry_after_of(_AiohttpLike(429, {"Retry-After": "3"})) == 3.0
    assert retry_after_of(ValueError("429")) is None
    assert retry_after_of(lf.RateLimited(retry_after=4)) == 4.0


def test_the_llm_example_runs_offline_and_stops_at_its_budget():
    pytest.importorskip("openai")  # the example calls the official client
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "llm_pipeline.py"
    out = subprocess.run(
        [sys.executable, str(example), "--sections", "40"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "40 sections analyzed" in out.stdout
    assert "succeeded" in out.stdout
    out = subprocess.run(
        [sys.executable, str(example), "--sections", "40", "--budget", "0.003"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "stopped: budget cost 0.003" in out.stdout


def test_yaml_declares_an_adaptive_limit(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\n"
        "settings:\n"
        "  rate_limits:\n"
        "    llm: {adaptive: {start: 2, max: 8}}\n"
        "    api: 10/s\n"
        "steps:\n"
        "  - {name: a, run: echo a, rate_limit: llm}\n"
    )
    limits = lf.load_pipeline(path).run_options()["rate_limits"]
    assert limits["llm"] == lf.Adaptive(start=2, max=8)
    assert limits["api"] == "10/s"
    path.write_text(
        "name: p\n"
        "settings:\n"
        "  rate_limits:\n"
        "    llm: {adaptive: {start: 9, max: 2}}\n"
        "    api: {adaptiv: 3}\n"
        "steps:\n"
        "  - {name: a, run: echo a}\n"
    )
    with pytest.raises(lf.PipelineError) as e:
        lf.load_pipeline(path)
    lines = {line: text for _, line, text in e.value.problems}
    assert "needs min <= start <= max" in lines[4]
    assert "must be a rate like '80/min' or {adaptive" in lines[5]


def test_the_fake_api_enforces_tokens_per_key_and_changes_limits_mid_run():
    with FakeAPI(requests=None, tokens=30, window=1.0, latency=0.0) as api:

        def ask(key: str, tokens: int) -> httpx.Response:
            return httpx.post(
                api.url + "/v1/complete",
                json={"prompt": "two words", "max_tokens": tokens},
                headers={"Authorization": f"Bearer {key}"},
            )

        assert ask("a", 18).status_code == 200  # 2 + 18 = 20 tokens
        refused = ask("a", 18)
        assert refused.status_code == 429
        assert 0 < float(refused.headers["Retry-After"]) <= 1.0
        assert ask("b", 18).status_code == 200  # another key has its own window
        api.set_limits(tokens=100)
        assert ask("a", 18).status_code == 200
        assert api.stats["ok"] == 3 and api.stats["rejected"] == 1


@pytest.mark.parametrize("limit", ["adaptive", "pool"])
@pytest.mark.parametrize("how", ["group fails fast", "group times out"])
def test_room_handed_to_a_cancelled_task_goes_to_the_next_one(limit, how):
    # regression: the freed slot went to a parked task of the group that was then
    # cancelled; the task behind it waited forever
    group = (
        lf.TaskGroup("g", fail_fast=True)
        if how == "group fails fast"
        else lf.TaskGroup("g", timeout=0.3)
    )
    flow = lf.Flow()

    def a() -> None:
        time.sleep(0.3 if how == "group fails fast" else 1.0)
        raise ValueError("boom")

    option = {"rate_limit": "k"} if limit == "adaptive" else {"resources": {"k": 1}}
    flow.add(a, name="a", group=group, priority=10, **option)
    flow.add(lambda: "b", name="b", group=group, priority=5, **option)
    flow.add(lambda: "c", name="c", priority=0, **option)
    kwargs = (
        {"rate_limits": {"k": lf.Adaptive(start=1, max=1)}}
        if limit == "adaptive"
        else {"resources": {"k": 1}}
    )
    done = threading.Event()
    result: list[lf.RunResult] = []

    def run() -> None:
        try:
            result.append(flow.run(fail_fast=False, **kwargs))
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(10), "the run hung"
    assert result[0].tasks["c"].status == "succeeded"


def test_an_unreadable_http_error_is_an_ordinary_failure():
    class HTTPError(Exception):
        @property
        def response(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("not set")

    HTTPError.__module__ = "httpx._exceptions"
    assert retry_after_of(HTTPError("x")) is None
    assert retry_after_of(lf.RateLimited(retry_after=10**9)) == 600.0  # capped like headers


def test_real_usage_corrects_an_adaptive_limits_rate_ceiling():
    flow = lf.Flow()
    for k in range(4):

        def call() -> None:
            lf.usage("k", 0.1)  # declared 1, really 0.1

        flow.add(call, name=f"c{k}", rate_limit={"k": 1})
    t0 = time.monotonic()
    run = flow.run(max_workers=1, rate_limits={"k": lf.Adaptive(start=1, max=1, rate="2/10s")})
    assert run.ok
    assert time.monotonic() - t0 < 5  # by the estimates only two fit in 10 s
    with pytest.raises(lf.InvalidOptionError, match="amount >= 0"):
        lf.usage("k", -1)
