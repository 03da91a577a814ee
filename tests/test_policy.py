"""One policy, two users: ``Plan.simulate``'s replay starts tasks in the order a run does."""

import random

import pytest

import layerflow as lf


def random_flow(seed: int, n: int = 14) -> lf.Flow:
    rng = random.Random(seed)
    flow = lf.Flow(f"random{seed}")
    for k in range(n):
        parents = rng.sample(range(k), min(k, rng.randint(0, 3)))
        params = [f"t{p}" for p in parents]
        fn = eval(f"lambda {', '.join(params)}: None")  # parameters name the parents
        flow.add(fn, name=f"t{k}", priority=rng.choice([0, 0, 0, 1, 5]))
    return flow


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("mode", ["dynamic", "layered"])
def test_one_worker_starts_tasks_in_the_predicted_order(seed, mode):
    flow = random_flow(seed)
    predicted = flow.plan().predicted_order(max_workers=1, mode=mode)
    run = flow.run(max_workers=1, mode=mode, store=False)
    assert run.order == predicted
    assert sorted(predicted) == sorted(flow.plan().tasks)


def test_sequential_order_is_predicted_with_a_rate_limit_holding_the_queue():
    flow = random_flow(11, n=8)
    for name in ("t2", "t5", "t6"):
        flow[name].rate_limit = "api"
    limits = {"api": "1/0.05s"}
    plan = flow.plan()
    # the replay parks t2 behind its window and starts nothing else meanwhile, as a run does
    predicted = plan.predicted_order(0.0, mode="sequential", rate_limits=limits)
    assert predicted == [plan.tasks[i] for i in plan.sequence()]
    run = flow.run(mode="sequential", rate_limits=limits, store=False)
    assert run.order == predicted
    # three calls one window apart: the prediction counts two waits
    assert plan.simulate(0.0, mode="sequential", rate_limits=limits) == pytest.approx(0.1)


def test_predicted_order_names_a_wrong_mode():
    with pytest.raises(lf.InvalidOptionError, match="mode"):
        random_flow(0).plan().predicted_order(mode="fast")
