"""Document analysis through a rate-limited LLM API: split, analyze in parallel, combine.

The calls go through the official ``openai`` client. The provider is layerflow's local fake
(``layerflow.testing.FakeAPI``), started here on 127.0.0.1, so the example runs offline; it
speaks OpenAI's chat completions API, allows 40 requests and 6,000 tokens per second per
key, and answers 429 with OpenAI's headers and error body when over. The flow is not told
those numbers:

- ``lf.Adaptive`` finds how many calls may run at once from the 429s (the client raises
  ``openai.RateLimitError``, which layerflow reads as push-back, not failure). The client is
  built with ``max_retries=0``: its own retries would hold the task's slot and hide the 429s
  from the adaptive limit;
- each call declares an estimate of its tokens and ``lf.usage_from(reply, "llm-tokens")``
  records what the reply says it used, so the token window counts the truth
  (``lf.track_usage(tokens="llm-tokens")`` would do it with no code in the task);
- a budget on cost stops the run cleanly if the document turns out longer than planned.

One async client, made once, serves every call (and would serve later runs too).
Run it with ``python examples/llm_pipeline.py`` (needs ``openai``: ``pip install openai``);
``--budget 0.05`` shows a run that stops at its budget and keeps what it finished.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

try:
    import openai
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit(
        "examples/llm_pipeline.py calls the official openai client, which is not installed: "
        "pip install openai"
    )

import layerflow as lf
from layerflow.testing import FakeAPI

PRICE_PER_TOKEN = 0.002 / 1000  # dollars, as a provider might charge
MODEL = "gpt-4o-mini"

flow = lf.Flow("document-analysis")
client: Any = None  # one openai.AsyncOpenAI for every call, made in main()


@flow.task
def sections(document: str) -> list[str]:
    """Split the document into its sections (here: paragraphs)."""
    return [part.strip() for part in document.split("\n\n") if part.strip()]


@flow.task(map="sections", rate_limit={"llm": 1, "llm-tokens": 120, "cost": 0.0003})
async def analyze(sections: str) -> str:
    """One LLM call per section, in parallel, as fast as the provider allows."""
    reply = await client.chat.completions.create(  # a 429: layerflow waits and tries again
        model=MODEL,
        max_tokens=80,
        messages=[
            {"role": "system", "content": "Summarize the section in one sentence."},
            {"role": "user", "content": sections},
        ],
    )
    used = lf.usage_from(reply, "llm-tokens")  # the window counts what this call really used
    lf.record(cost=(used or 0) * PRICE_PER_TOKEN)
    return reply.choices[0].message.content


@flow.task
def report(analyze: list[str]) -> str:
    """Combine the sections' analyses."""
    return f"{len(analyze)} sections analyzed; first: {analyze[0][:40]}..."


def main() -> None:
    global client
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", type=int, default=300)
    parser.add_argument("--budget", type=float, default=1.0, help="dollars")
    args = parser.parse_args()
    document = "\n\n".join(
        f"Section {k}. " + "The quarterly numbers moved again. " * 8 for k in range(args.sections)
    )
    with FakeAPI(requests=40, tokens=6000, window=1.0, latency=0.05) as api:
        client = openai.AsyncOpenAI(base_url=api.url + "/v1", api_key="demo", max_retries=0)
        run = flow.run(
            {"document": document},
            rate_limits={
                "llm": lf.Adaptive(start=4, max=32),
                "llm-tokens": "6000/s",  # the tokens per second the plan allows
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
