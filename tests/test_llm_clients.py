"""The official LLM clients (``openai``, ``anthropic``) against the local fake provider
(``layerflow.testing.FakeAPI``), offline: their 429s and overloads are push-back, their
usage is counted, and a client made once works across runs. Errors of clients that are not
installed here (litellm, google-genai, mistralai, cohere) are built in their shapes."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any

import httpx
import pytest

import layerflow as lf
from layerflow.adaptive import OVERLOAD_RUN, AdaptiveState
from layerflow.pushback import classify, reset_seconds, retry_after_of
from layerflow.testing import FakeAPI, go_duration
from layerflow.tracking import _untrack, tokens_of

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

ASK = [{"role": "user", "content": "two words"}]


def _openai_error(api: FakeAPI, **client: object) -> BaseException:
    c = openai.OpenAI(base_url=api.url + "/v1", api_key="k", **{"max_retries": 0, **client})
    with pytest.raises(openai.APIStatusError) as e:
        for _ in range(10):
            c.chat.completions.create(model="gpt-4o-mini", max_tokens=1, messages=ASK)
    return e.value


def _anthropic_error(api: FakeAPI) -> BaseException:
    c = anthropic.Anthropic(base_url=api.url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as e:
        for _ in range(10):
            c.messages.create(model="claude-sonnet-4-5", max_tokens=1, messages=ASK)
    return e.value


# --- what the real clients raise -------------------------------------------------------


def test_the_real_clients_429s_are_read_with_their_waits():
    with FakeAPI(requests=2, window=0.5, latency=0.0) as api:
        error = _openai_error(api)
        assert isinstance(error, openai.RateLimitError)
        push = classify(error)
        assert push is not None and not push.overload and push.status == 429
        assert push.library == "openai" and push.sdk_retries == 0
        assert 0 < push.retry_after <= 0.5  # its retry-after, with decimals
        assert error.code == "rate_limit_exceeded"  # the real body
        assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    with FakeAPI(requests=2, window=0.5, latency=0.0) as api:
        error = _anthropic_error(api)
        assert isinstance(error, anthropic.RateLimitError)
        assert error.body["error"]["type"] == "rate_limit_error"
        assert 0 < retry_after_of(error) <= 0.5
    with FakeAPI(requests=2, window=3.0, latency=0.0, whole_seconds=True) as api:
        assert retry_after_of(_anthropic_error(api)) in (1.0, 2.0, 3.0)


def test_without_retry_after_the_providers_reset_headers_give_the_wait():
    with FakeAPI(requests=2, window=0.8, latency=0.0, retry_after=False) as api:
        error = _openai_error(api)
        assert "retry-after" not in error.response.headers
        reset = error.response.headers["x-ratelimit-reset-requests"]  # "799ms"
        assert reset.endswith("ms")
        assert 0.5 < retry_after_of(error) <= 0.8
    with FakeAPI(requests=2, window=0.8, latency=0.0, retry_after=False) as api:
        error = _anthropic_error(api)
        reset = error.response.headers["anthropic-ratelimit-requests-reset"]
        assert reset.endswith("Z")  # an RFC 3339 time
        assert 0.4 < retry_after_of(error) <= 0.8


def test_the_real_clients_overloads_are_told_apart_from_rate_limits():
    with FakeAPI(requests=None, latency=0.0) as api:
        api.overload_next(2)
        error = _anthropic_error(api)
        assert isinstance(error, anthropic.InternalServerError) and error.status_code == 529
        assert error.body["error"]["type"] == "overloaded_error"
        push = classify(error)
        assert push is not None and push.overload and push.retry_after is None
        openai_error = _openai_error(api)
        assert isinstance(openai_error, openai.InternalServerError)
        assert openai_error.status_code == 503
        assert classify(openai_error).overload  # type: ignore[union-attr]
        assert api.stats["overloaded"] == 2 and api.stats["ok"] == 0


def test_a_client_that_retried_by_itself_is_known():
    # no Retry-After: the client's own backoff (0.5 s, 1 s) retries within the window
    with FakeAPI(requests=0, window=0.5, latency=0.0, retry_after=False) as api:
        error = _openai_error(api, max_retries=2)
        assert classify(error).sdk_retries == 2  # type: ignore[union-attr]


def test_an_account_without_credit_is_an_ordinary_failure():
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(429, request=request)
    body = {"message": "You exceeded your current quota", "code": "insufficient_quota"}
    error = openai.RateLimitError("quota", response=response, body=body)
    assert error.code == "insufficient_quota"
    assert classify(error) is None


# --- errors of other clients, in their shapes ------------------------------------------


def _shaped(module: str, name: str = "Error", **fields: object) -> Exception:
    cls = type(name, (Exception,), {"__module__": module})
    error = cls("boom")
    for k, v in fields.items():
        setattr(error, k, v)
    return error


class _Response:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code = status
        self.headers = headers


def test_every_common_clients_errors_are_recognized():
    # litellm: .status_code, a .response with the provider's headers, code "429" (text)
    litellm = _shaped(
        "litellm.exceptions",
        "RateLimitError",
        status_code=429,
        code="429",
        num_retries=2,
        response=_Response(429, {"retry-after": "3"}),
    )
    push = classify(litellm)
    assert push is not None and push.retry_after == 3.0 and push.sdk_retries == 2
    # google-genai: the status in .code, the text status in .status
    google = _shaped("google.genai.errors", "ClientError", code=429, status="RESOURCE_EXHAUSTED")
    assert retry_after_of(google) == 1.0
    details = {"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                      "retryDelay": "7s"}]}}  # fmt: skip
    google.details = details  # type: ignore[attr-defined]
    assert retry_after_of(google) == 7.0
    server = _shaped("google.genai.errors", "ServerError", code=503, status="UNAVAILABLE")
    assert classify(server).overload  # type: ignore[union-attr]
    # mistralai: .status_code and .raw_response; cohere: .status_code and .headers
    mistral = _shaped("mistralai.models", status_code=429, raw_response=_Response(429, {}))
    assert retry_after_of(mistral) == 1.0
    cohere = _shaped("cohere.errors", status_code=429, headers={"Retry-After": "0.5"})
    assert retry_after_of(cohere) == 0.5
    groq = _shaped("groq", status_code=429, response=_Response(429, {"retry-after-ms": "250"}))
    assert retry_after_of(groq) == 0.25
    # httpx2, which the openai and anthropic clients use underneath
    httpx2 = _shaped("httpx2._exceptions", "HTTPStatusError", response=_Response(529, {}))
    assert classify(httpx2).overload  # type: ignore[union-attr]


def test_any_error_with_a_status_and_headers_is_push_back_but_a_bare_number_is_not():
    mine = _shaped("myapp.client", status=429, headers={"Retry-After": "2"})
    assert retry_after_of(mine) == 2.0
    assert classify(_shaped("myapp.client", status_code=503)) is None  # no response: not HTTP
    assert classify(_shaped("myapp.client", code=429)) is None
    assert classify(SystemExit(429)) is None
    assert classify(_shaped("myapp.client", status_code=404, headers={})) is None


def test_retry_after_and_the_reset_headers_are_read_in_every_form():
    def wait(status: int, headers: dict[str, str]) -> float | None:
        return retry_after_of(_shaped("httpx", status_code=status, headers=headers))

    assert wait(429, {"retry-after": "1.5"}) == 1.5
    assert wait(429, {"retry-after-ms": "20", "retry-after": "9"}) == 0.02
    assert 25 < wait(429, {"Retry-After": formatdate(time.time() + 30, usegmt=True)}) <= 30  # type: ignore[operator]
    assert wait(503, {"retry-after": "2"}) == 2.0  # an explicit wait: rate limiting
    openai_headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "20000",
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert wait(429, openai_headers) == 1.0  # the limit that ran out: requests
    openai_headers["x-ratelimit-remaining-requests"] = "5"
    openai_headers["x-ratelimit-limit-requests"] = "500"
    assert wait(429, openai_headers) == 1.0  # the least left: 1% of requests
    openai_headers["x-ratelimit-remaining-tokens"] = "0"
    assert wait(429, openai_headers) == 360.0  # tokens ran out: six minutes
    soon = (datetime.now(UTC) + timedelta(seconds=4)).isoformat().replace("+00:00", "Z")
    anthropic_headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": soon,
        "anthropic-ratelimit-tokens-remaining": "100",
        "anthropic-ratelimit-tokens-reset": "2099-01-01T00:00:00Z",
    }
    assert 3 < wait(429, anthropic_headers) <= 4  # type: ignore[operator]
    assert 3 < wait(429, {"x-ratelimit-reset": str(int(time.time()) + 5)}) <= 6  # type: ignore[operator]
    assert wait(429, {"ratelimit-reset": "2"}) == 2.0
    assert wait(429, {"x-ratelimit-reset-requests": "x"}) == 1.0  # unreadable: the default
    assert wait(503, {"x-ratelimit-reset-requests": "20ms"}) is None  # an overload
    for text, seconds in [("1s", 1), ("6m0s", 360), ("20ms", 0.02), ("1h2m3.5s", 3723.5)]:
        assert reset_seconds(text) == pytest.approx(seconds)
        assert reset_seconds(go_duration(seconds)) == pytest.approx(seconds, abs=1e-3)
    assert reset_seconds("soon") is None


def test_a_users_rule_adds_push_back():
    class Busy(Exception):
        pass

    class Quota(Exception):
        pass

    def broken(e: BaseException) -> bool:
        raise RuntimeError("a rule's own bug")

    rules = [
        lf.pushback.register(broken),
        lf.pushback.register(lambda e: isinstance(e, Quota) and 2.5),
        lf.pushback.register(lambda e: isinstance(e, Busy), overload=True),
    ]
    try:
        assert retry_after_of(Quota()) == 2.5
        push = classify(Busy())
        assert push is not None and push.overload and push.retry_after is None
        assert classify(ValueError()) is None
        flow = lf.Flow()
        tries = []

        @flow.task(retries=0)
        def flaky() -> str:
            tries.append(1)
            if len(tries) < 3:
                raise Busy()
            return "done"

        run = flow.run()
        assert run["flaky"] == "done" and run.tasks["flaky"].attempts == 3
    finally:
        for rule in rules:
            lf.pushback.unregister(rule)
    assert classify(Quota()) is None
    with pytest.raises(lf.InvalidOptionError):
        lf.pushback.register("not a function")  # type: ignore[arg-type]


# --- the scheduler's answers -----------------------------------------------------------


def test_an_overload_neither_pauses_the_key_nor_shrinks_the_limit_once():
    state = AdaptiveState(lf.Adaptive(start=8, max=16))
    for i in range(OVERLOAD_RUN - 1):
        state.take(i, 0.0, 1)
        state.done(i, False, None, 0.1, overload=True)
    assert state.limit == 8 and state.paused_until == 0.0 and not state.probing
    state.take(10, 0.2, 1)
    state.done(10, True, None, 0.3)  # a success between: the count starts again
    for i in range(OVERLOAD_RUN):
        state.take(20 + i, 0.4, 1)
        state.done(20 + i, False, None, 0.5, overload=True)
    assert state.limit == pytest.approx(8 * 0.7)  # overloads in a row: the provider is busy
    assert state.paused_until == 0.0  # but nothing is paused
    state.take(30, 0.6, 1)
    state.done(30, False, 1.0, 0.7)  # a 429: paused, probing
    assert state.paused_until == pytest.approx(1.7) and state.probing


def _call_flow(n: int, make_client, call) -> lf.Flow:  # type: ignore[no-untyped-def]
    flow = lf.Flow("calls")
    clients: list[object] = []

    @flow.task
    def prompts() -> list[str]:
        return [f"section {k} of the document" for k in range(n)]

    @flow.task(map="prompts", rate_limit="llm")
    async def ask(prompts: str) -> int:
        if not clients:
            clients.append(make_client())
        return await call(clients[0], prompts)

    return flow


async def _openai_call(client, prompt: str) -> int:  # type: ignore[no-untyped-def]
    r = await client.chat.completions.create(
        model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": prompt}]
    )
    return r.usage.total_tokens


async def _anthropic_call(client, prompt: str) -> int:  # type: ignore[no-untyped-def]
    r = await client.messages.create(
        model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": prompt}]
    )
    return r.usage.input_tokens + r.usage.output_tokens


@pytest.mark.parametrize("which", ["openai", "anthropic"])
def test_an_adaptive_limit_paces_the_real_async_clients_without_failures(which):
    with FakeAPI(requests=20, window=0.25, latency=0.02) as api:
        if which == "openai":
            flow = _call_flow(
                150,
                lambda: openai.AsyncOpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0),
                _openai_call,
            )
        else:
            flow = _call_flow(
                150,
                lambda: anthropic.AsyncAnthropic(base_url=api.url, api_key="k", max_retries=0),
                _anthropic_call,
            )
        run = flow.run(rate_limits={"llm": lf.Adaptive(start=2, max=12)})  # fail_fast=True
        assert run.ok, run.summary()
        assert api.stats["ok"] == 150
        assert 0 < api.stats["rejected"] < 60


def test_the_sync_openai_client_in_thread_tasks():
    with FakeAPI(requests=10, window=0.25, latency=0.02) as api:
        client = openai.OpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0)
        flow = lf.Flow()

        @flow.task
        def prompts() -> list[str]:
            return [f"p {k}" for k in range(60)]

        @flow.task(map="prompts", rate_limit="llm")
        def ask(prompts: str) -> str:
            r = client.chat.completions.create(model="m", max_tokens=3, messages=ASK)
            return r.choices[0].message.content

        run = flow.run(rate_limits={"llm": lf.Adaptive(start=2, max=8)})
        assert run.ok and api.stats["ok"] == 60 and api.stats["rejected"] > 0


def _timed_calls(overload: float) -> tuple[Any, Any, float]:
    with FakeAPI(requests=None, latency=0.01, overload=overload, seed=3) as api:
        flow = _call_flow(
            80,
            lambda: anthropic.AsyncAnthropic(base_url=api.url, api_key="k", max_retries=0),
            _anthropic_call,
        )
        t0 = time.perf_counter()
        run = flow.run(rate_limits={"llm": lf.Adaptive(start=8, max=8)}, fail_fast=True)
        return api, run, time.perf_counter() - t0


def test_overloads_are_retried_by_their_task_alone_without_spending_retries():
    clean = _timed_calls(0.0)[2]  # the same calls with no overload, at today's load
    api, run, took = _timed_calls(0.2)
    assert run.ok
    assert api.stats["ok"] == 80 and api.stats["overloaded"] >= 5
    retried = [t for t in run.tasks.values() if t.attempts > 1]
    assert retried and all(t.status == "succeeded" for t in retried)  # retries=0
    # a 1 s pause of the key per overload (what a 503 did before) would add > 5 s
    assert took < clean + 2.5, (took, clean)


def test_the_sdks_own_retries_are_reported_once_per_run(caplog):
    # 2 calls per 3 s, no Retry-After: the client's own retries (after about 0.5 s and 1 s)
    # fall in the same window, and the calls beyond the first two reach layerflow after them
    with FakeAPI(requests=2, window=3.0, latency=0.0, retry_after=False) as api:
        flow = _call_flow(
            4,
            lambda: openai.AsyncOpenAI(base_url=api.url + "/v1", api_key="k"),  # max_retries=2
            _openai_call,
        )
        with caplog.at_level(logging.WARNING, logger="layerflow"):
            run = flow.run(rate_limits={"llm": lf.Adaptive(start=8, max=8)})
        assert run.ok
    told = [r.getMessage() for r in caplog.records if "retried it" in r.getMessage()]
    assert len(told) == 1, told
    assert "openai client had already retried it 2 time(s)" in told[0]
    assert "max_retries=0" in told[0]


# --- usage -----------------------------------------------------------------------------


def test_an_estimate_counts_as_spent_when_the_attempt_records_nothing():
    with FakeAPI(requests=None, latency=0.0) as api:
        client = openai.OpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0)
        flow = lf.Flow()

        @flow.task
        def prompts() -> list[str]:
            return ["a b c"] * 40

        @flow.task(map="prompts", rate_limit={"llm-tokens": 1000})
        def ask(prompts: str) -> int:
            return client.chat.completions.create(
                model="m", max_tokens=200, messages=ASK
            ).usage.total_tokens

        run = flow.run(budget={"llm-tokens": 5000}, max_workers=2)
        assert run.status == "stopped", run.summary()
        assert run.budget["llm-tokens"]["spent"] >= 4000
        assert api.stats["ok"] <= 6  # not the 40 calls a budget counting 0 let through


def test_usage_from_reads_every_clients_responses():
    with FakeAPI(requests=None, latency=0.0) as api:
        o = openai.OpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0)
        reply = o.chat.completions.create(model="m", max_tokens=7, messages=ASK)
        assert tokens_of(reply) == 9
        a = anthropic.Anthropic(base_url=api.url, api_key="k", max_retries=0)
        message = a.messages.create(model="m", max_tokens=4, messages=ASK)
        assert tokens_of(message) == 6
    anthropic_usage = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100}
    assert tokens_of({"usage": anthropic_usage}) == 115
    litellm_like = {"usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    assert tokens_of(litellm_like) == 7
    google_like = type("R", (), {"usage_metadata": {"total_token_count": 42}})()
    assert tokens_of(google_like) == 42
    assert tokens_of({"text": "no usage"}) is None

    flow = lf.Flow()
    flow.add(lambda: lf.usage_from(reply, "llm-tokens"), name="a")
    flow.add(lambda: lf.usage_from({"text": "none"}, "llm-tokens"), name="b")
    run = flow.run()
    assert run["a"] == 9 and run["b"] is None
    assert run.metrics == {"llm-tokens": 9}
    with pytest.raises(lf.InvalidOptionError):
        lf.usage_from(reply, "")


@pytest.fixture
def tracked():
    lf.track_usage(tokens="llm-tokens")
    yield
    _untrack()


def test_track_usage_counts_the_clients_responses_for_a_budget(tracked):
    with FakeAPI(requests=None, latency=0.0) as api:
        sync = openai.OpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0)
        clients: list[object] = []
        flow = lf.Flow()

        @flow.task
        def prompts() -> list[str]:
            return ["one two three"] * 30

        @flow.task(map="prompts")
        def ask(prompts: str) -> str:  # no code about usage
            return sync.chat.completions.create(model="m", max_tokens=97, messages=ASK).id

        @flow.task(map="prompts")
        async def ask_async(prompts: str) -> str:
            if not clients:
                clients.append(anthropic.AsyncAnthropic(base_url=api.url, api_key="k"))
            m = await clients[0].messages.create(model="m", max_tokens=98, messages=ASK)
            return m.id

        run = flow.run(budget={"llm-tokens": 1000}, max_workers=2)
        assert run.status == "stopped"
        assert run.budget["llm-tokens"]["spent"] == api.stats["tokens"]  # the server's count
        assert 1000 <= api.stats["tokens"] < 1400
        outside = sync.chat.completions.create(model="m", max_tokens=1, messages=ASK)
        assert outside.usage.total_tokens == 3  # outside a task: not recorded, not broken


def test_track_usage_imports_nothing_and_counts_a_wrapped_call_once(tmp_path):
    # a stand-in for litellm, whose functions call the openai client (for its answer's
    # headers, through with_raw_response) and return a response of their own
    (tmp_path / "litellm.py").write_text(
        textwrap.dedent(
            """
            import openai
            def completion(base_url, **kwargs):
                c = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)
                reply = c.chat.completions.with_raw_response.create(**kwargs).parse()
                return {"usage": {"total_tokens": reply.usage.total_tokens}}
            def embedding(base_url, **kwargs):
                c = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)
                reply = c.chat.completions.create(**kwargs)
                return {"usage": {"total_tokens": reply.usage.total_tokens}}
            """
        )
    )
    code = textwrap.dedent(
        """
        import sys
        import layerflow as lf
        from layerflow.testing import FakeAPI
        lf.track_usage(tokens="t")
        assert "openai" not in sys.modules and "litellm" not in sys.modules
        import litellm
        ask = dict(model="m", max_tokens=5, messages=[{"role": "user", "content": "a b"}])
        with FakeAPI(requests=None, latency=0.0) as api:
            flow = lf.Flow()
            flow.add(lambda: litellm.completion(api.url + "/v1", **ask), name="raw")
            flow.add(lambda: litellm.embedding(api.url + "/v1", **ask), name="plain")
            run = flow.run()
        print(run.tasks["raw"].metrics["t"], run.tasks["plain"].metrics["t"])
        """
    )
    path = ":".join([str(tmp_path), *sys.path])
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["7.0", "7.0"]  # each call once, not twice


def test_a_budget_or_token_limit_nothing_recorded_is_warned_about(caplog):
    flow = lf.Flow()
    flow.add(lambda: 1, name="a", rate_limit={"llm-tokens": 100})
    flow.add(lambda: 1, name="b", rate_limit={"api-tokens": 10})
    flow.add(lambda: lf.record(cost=0.1), name="c")
    with caplog.at_level(logging.WARNING, logger="layerflow"):
        flow.run(budget={"llm-tokens": 5000, "cost": 1}, rate_limits={"api-tokens": "100/s"})
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("budget 'llm-tokens': no task recorded 'llm-tokens'")
        and "lf.track_usage(tokens='llm-tokens')" in m
        for m in messages
    ), messages
    assert any(m.startswith("rate limit 'api-tokens': no task recorded") for m in messages)
    assert not any("'cost'" in m for m in messages)  # recorded


# --- one client, many runs -------------------------------------------------------------


def test_an_async_client_made_once_works_across_runs_and_run_async():
    with FakeAPI(requests=None, latency=0.0) as api:
        client = openai.AsyncOpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0)
        plain = httpx.AsyncClient()
        loops = []
        flow = lf.Flow()

        @flow.task
        def items() -> list[int]:
            return list(range(4))

        @flow.task(map="items")
        async def call(items: int) -> int:
            loops.append(asyncio.get_running_loop())
            r = await client.chat.completions.create(model="m", max_tokens=1, messages=ASK)
            p = await plain.post(api.url + "/v1/complete", json={"prompt": "x"})
            return r.usage.total_tokens + p.status_code

        for _ in range(3):
            assert flow.run()["call"] == [203] * 4
        assert len(set(loops)) == 1  # the run loop is kept for this thread

        seen = []
        thread = threading.Thread(target=lambda: seen.append(flow.run(fail_fast=False)))
        thread.start()
        thread.join()
        assert loops[-1] is not loops[0]  # another thread's runs: a loop of their own

        async def main() -> list[int]:  # run_async: the caller's own loop and clients
            nonlocal client, plain
            client = openai.AsyncOpenAI(base_url=api.url + "/v1", api_key="k", max_retries=0)
            plain = httpx.AsyncClient()
            try:
                return (await flow.run_async())["call"]
            finally:
                await plain.aclose()
                await client.close()

        assert asyncio.run(main()) == [203] * 4


def test_a_run_that_gives_up_on_a_coroutine_leaves_the_loop_usable():
    flow = lf.Flow()

    @flow.task(timeout=0.2)
    async def slow() -> None:
        await asyncio.sleep(30)

    with pytest.raises(lf.TaskFailed):
        flow.run()

    quick = lf.Flow()

    @quick.task
    async def fast() -> str:
        await asyncio.sleep(0.01)
        return "ok"

    t0 = time.perf_counter()
    assert quick.run()["fast"] == "ok"
    assert time.perf_counter() - t0 < 2
