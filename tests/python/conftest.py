"""Fixtures of the Python end-to-end suite: real gateway processes."""

from __future__ import annotations

from typing import Callable

import pytest

from harness import Gateway


@pytest.fixture
def start_gateway(request: pytest.FixtureRequest) -> Callable[..., Gateway]:
    """A factory: ``start_gateway("--flag", "value", ...)`` starts ``wsgate
    --listen 127.0.0.1:0 FLAGS`` and returns it once it listens. Every process it
    started is stopped (terminate, wait, kill) when the test ends, pass or fail."""
    started: list[Gateway] = []

    def start(*flags: str) -> Gateway:
        gw = Gateway(flags)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for gw in started:
            print(f"--- wsgate {gw.flags} (pid {gw.pid}) stderr tail ---\n{gw.log_tail()}")


@pytest.fixture
def redis():
    """A ``redis-server`` of the test's own on a free loopback port, stopped by PID at
    the end (after the gateways, which fixtures started later are stopped before)."""
    from backend_harness import RedisServer

    server = RedisServer()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway]) -> Gateway:
    """One gateway with default options."""
    return start_gateway()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep
