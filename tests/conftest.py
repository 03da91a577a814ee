"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import signal
import threading

import pytest

# A shell that starts the suite in the background (`make test &`, nohup) leaves SIGINT
# ignored, and the processes the tests start inherit that: the Ctrl-C tests would wait for
# an interrupt that never comes. Python's own handler again (reset to the default when a
# child process starts its program).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def ctrl_c():
    """``ctrl_c(seconds=0)``: a Ctrl-C to the main thread, as a terminal's reaches it (an
    ``os.kill`` of this process may be taken by any thread, and is then seen later)."""
    timers = []
    main = threading.main_thread().ident

    def send(seconds: float = 0.0) -> None:
        if seconds <= 0:
            signal.pthread_kill(main, signal.SIGINT)
            return
        timer = threading.Timer(seconds, signal.pthread_kill, (main, signal.SIGINT))
        timers.append(timer)
        timer.start()

    yield send
    for timer in timers:  # never an interrupt after the test that asked for it
        timer.cancel()


@pytest.fixture(scope="session")
def dask_cluster():
    """One real Dask cluster for the whole session: a scheduler in this process and two
    single-threaded worker processes. Like layerflow's own local cluster, its scheduler
    leaves retries after a worker's death to layerflow (``allowed-failures: 0``)."""
    distributed = pytest.importorskip("distributed")
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
    client = distributed.Client(cluster)
    yield cluster, client
    client.close()
    cluster.close()


@pytest.fixture
def dask_client(dask_cluster):
    """The session cluster's client, with both workers up (a test may have killed one)
    and idle (a task an earlier test gave up on may still be running on a worker)."""
    import time

    cluster, client = dask_cluster
    client.wait_for_workers(2, timeout=60)
    deadline = time.monotonic() + 30
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return client


#: Debian's chromium (``make test`` installs it), driven by Playwright: no browser download
CHROMIUM = "/usr/bin/chromium"
# without the background-networking flags Chromium's own connections are refused here
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for the tests that look at a page (the report, notebook output,
    layerflow ui)."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make test` installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (make test installs it as root)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
