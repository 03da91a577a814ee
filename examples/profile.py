"""The user-profile example: three independent lookups, then one step that needs them all.

Each lookup simulates the latency of a remote call. layerflow sees from the parameter names
that `user`, `orders` and `preferences` only need the flow input `user_id`, runs them at the
same time, and starts `profile` once all three are done.

Run it with `make demo` or `python examples/profile.py`.
"""

from __future__ import annotations

import asyncio
import time

import layerflow as lf

flow = lf.Flow("profile")


@flow.task
def user(user_id: str) -> dict:
    time.sleep(0.4)  # a user service
    return {"id": user_id, "name": "Ada"}


@flow.task(retries=2, timeout=5.0)
def orders(user_id: str) -> list[dict]:
    time.sleep(0.6)  # an orders database
    return [{"order": 1, "total": 42.0}, {"order": 2, "total": 7.5}]


@flow.task
async def preferences(user_id: str) -> dict:
    await asyncio.sleep(0.5)  # a preferences API
    return {"theme": "dark"}


@flow.task
def recommendations(orders: list[dict]) -> list[str]:
    time.sleep(0.3)  # a model call that needs the orders
    return ["notebook", "pen"]


@flow.task(priority=10)
def profile(user: dict, orders: list[dict], preferences: dict, recommendations: list[str]) -> dict:
    spent = sum(o["total"] for o in orders)
    return {**user, "spent": spent, **preferences, "recommended": recommendations}


if __name__ == "__main__":
    print(flow.plan({"user_id": "42"}).explain())
    print()
    run = flow.run({"user_id": "42"}, max_workers=4)
    print(run.summary())
    print()
    print("profile:", run["profile"])
