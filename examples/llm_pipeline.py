"""Document analysis through a rate-limited LLM API: split, analyze in parallel, combine.

The "LLM" is layerflow's local fake API (``layerflow.testing.FakeAPI``), started here on
127.0.0.1, so the example runs offline. It allows 40 requests and 6,000 tokens per second per
key and answers 429 with a Retry-After when over; the flow is not told those numbers:

- ``lf.Adaptive`` finds how many calls may run at once from the 429s (``raise_for_status``
  raises ``httpx.HTTPStatusError``, which layerflow reads as push-back, not failure);
- each call declares an estimate of its tokens and reports what it really used with
  ``lf.usage``, so the token window counts the truth;
- a budget on cost stops the run cleanly if the document turns out longer than planned.

Run it with ``python examples/llm_pipeline.py`` (needs ``httpx``: ``pip install httpx``);
``--budget 0.05`` shows a run that stops at its budget and keeps what it finished.
"""

from __future__ import annotations

import argparse
import threading

import httpx

import layerflow as lf
from layerflow.testing import FakeAPI

PRICE_PER_TOKEN = 0.002 / 1000  # dollars, as a provider might charge

flow = lf.Flow("document-analysis")
_client: dict[str, httpx.Client] = {}
_lock = threading.Lock()


def client() -> httpx.Client:
    """One connection pool for all calls (threads share it)."""
    with _lock:
        if "c" not in _client:
            _client["c"] = httpx.Client(timeout=30, headers={"Authorization": "Bearer demo"})
        return _client["c"]


@flow.task
def sections(document: str) -> list[str]:
    """Split the document into its sections (here: paragraphs)."""
    return [part.strip() for part in document.split("\n\n") if part.strip()]


@flow.task(map="sections", rate_limit={"llm": 1, "llm-tokens": 120, "cost": 0.0003})
def analyze(sections: str, api_url: str) -> str:
    """One LLM call per section, in parallel, as fast as the provider allows."""
    r = client().post(api_url + "/v1/complete", json={"prompt": sections, "max_tokens": 80})
    r.raise_for_status()  # a 429 here: layerflow waits the Retry-After and tries again
    used = r.json()["usage"]["total_tokens"]
    lf.usage("llm-tokens", used)  # the window counts what this call really used
    lf.record(cost=used * PRICE_PER_TOKEN)
    return r.json()["text"]


@flow.task
def report(analyze: list[str]) -> str:
    """Combine the sections' analyses."""
    return f"{len(analyze)} sections analyzed; first: {analyze[0][:40]}..."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", type=int, default=300)
    parser.add_argument("--budget", type=float, default=1.0, help="dollars")
    args = parser.parse_args()
    document = "\n\n".join(
        f"Section {k}. " + "The quarterly numbers moved again. " * 8 for k in range(args.sections)
    )
    with FakeAPI(requests=40, tokens=6000, window=1.0, latency=0.05) as api:
        run = flow.run(
            {"document": document, "api_url": api.url},
            max_workers=32,
            rate_limits={
                "llm": lf.Adaptive(start=4, max=32),
                "llm-tokens": "6000/s",  # the tokens per minute the plan allows
            },
            budget={"cost": args.budget},
            progress=True,
        )
        print()
        print(run.values.get("report", "(no report: the run stopped before combining)"))
        tokens = run.metrics.get("llm-tokens", 0)
        print(
            f"{run.status} in {run.duration:.1f}s: {tokens:,.0f} tokens, "
            f"${run.metrics.get('cost', 0):.4f} of ${args.budget:g} budget; "
            f"the server granted {api.stats['ok']} calls and refused {api.stats['rejected']}"
        )
        if run.stop_reason:
            print(f"stopped: {run.stop_reason}")


if __name__ == "__main__":
    main()
