"""`distillery operator`'s HTTP endpoint: /metrics, /healthz, /readyz."""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request

import pytest

from distillery.controller import main as operator_main
from distillery.controller import metrics, server

pytestmark = pytest.mark.integration


def operator_parser() -> argparse.ArgumentParser:
    """`distillery operator`'s own arguments, as the entry point declares them."""
    parser = argparse.ArgumentParser()
    operator_main.add_arguments(parser)
    return parser


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.parametrize(
    ("health", "healthz", "readyz"),
    [
        ({"ready": False, "age": None}, 200, 503),  # starting: alive, not ready
        ({"ready": True, "age": 3.0}, 200, 200),
        ({"ready": True, "age": 120.0}, 503, 200),  # event loop stalled: restart me
    ],
)
def test_health_endpoints(health: dict, healthz: int, readyz: int):
    http = server.start(0, lambda: health, host="127.0.0.1")
    try:
        assert _get(http.server_port, "/healthz")[0] == healthz
        assert _get(http.server_port, "/readyz")[0] == readyz
        assert _get(http.server_port, "/nope")[0] == 404
    finally:
        http.shutdown()
        http.server_close()


def test_metrics_endpoint_serves_the_operator_series():
    metrics.RECONCILES.labels("ok").inc(0)
    metrics.JOBS.labels("Pending").set(0)
    http = server.start(0, lambda: {"ready": True, "age": 0.0}, host="127.0.0.1")
    try:
        code, text = _get(http.server_port, "/metrics")
    finally:
        http.shutdown()
        http.server_close()
    assert code == 200
    for name in (
        "distillery_reconcile_total",
        "distillery_reconcile_duration_seconds_bucket",
        "distillery_jobs{",
    ):
        assert name in text


def test_operator_command_line():
    args = operator_parser().parse_args(
        ["--metrics-port", "9999", "--namespace", "a", "--namespace", "b", "--leader-elect", "distillery"]
    )
    assert (args.metrics_port, args.namespace, args.leader_elect) == (9999, ["a", "b"], "distillery")
    with pytest.raises(SystemExit):
        operator_parser().parse_args(["--namespace", "a", "--all-namespaces"])
