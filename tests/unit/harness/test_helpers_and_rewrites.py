"""The harness's pure helpers and the process backend's rewrites (no processes, no servers)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.harness import compress_indexes, exit_code, expand_references
from tests.harness.process import (
    IMAGE_ENTRYPOINTS,
    image_entrypoint,
    path_rewriter,
    remap_ports,
    service_rewriter,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_compress_indexes():
    assert compress_indexes([]) == ""
    assert compress_indexes([4, 0, 2, 1]) == "0-2,4"
    assert compress_indexes([7]) == "7"


def test_expand_references_follows_the_kubelet():
    env = {"A": "1", "B": "two"}
    assert expand_references("$(A)-$(B)-$(C)", env) == "1-two-$(C)"
    assert expand_references("$$(A) costs $$5", env) == "$(A) costs $5"


def test_path_rewriter_replaces_whole_path_prefixes_only():
    rewrite = path_rewriter({"/data": "/tmp/x", "/data/cache": "/tmp/c"})
    assert rewrite("/data") == "/tmp/x"
    assert rewrite("--storage=/data/jobs/a") == "--storage=/tmp/x/jobs/a"
    assert rewrite('{"path":"/data/cache/m"}') == '{"path":"/tmp/c/m"}'
    assert rewrite("/database /srv/data /data.bak") == "/database /srv/data /data.bak"


def test_service_rewriter_maps_every_dns_form_to_the_proxy():
    rewrite = service_rewriter({("teacher", "ns1", 8000): 4321, ("web", "ns1", 80): 1234}, "ns1")
    assert rewrite("http://teacher:8000/v1") == "http://127.0.0.1:4321/v1"
    assert rewrite("http://teacher.ns1.svc.cluster.local:8000") == "http://127.0.0.1:4321"
    assert rewrite("http://web/x") == "http://127.0.0.1:1234/x"
    # Another port, another host, another namespace's short name: left alone.
    assert rewrite("http://teacher:80001 http://web:8080/ http://big-teacher:8000") == (
        "http://teacher:80001 http://web:8080/ http://big-teacher:8000"
    )
    assert service_rewriter({("teacher", "ns2", 8000): 1}, "ns1")("teacher:8000") == "teacher:8000"


def test_remap_ports_gives_each_port_flag_a_local_port():
    ports: dict[int, int] = {}
    free = iter([5001, 5002])
    argv, env = remap_ports(
        ["vllm", "--port", "8000", "--metrics-port=9090", "--max-tokens", "16", "--port", "0"],
        {"METRICS_PORT": "9090", "OTHER": "9090"},
        ports,
        lambda: next(free),
    )
    assert argv == ["vllm", "--port", "5001", "--metrics-port=5002", "--max-tokens", "16", "--port", "0"]
    assert env == {"METRICS_PORT": "5002", "OTHER": "9090"}
    assert ports == {8000: 5001, 9090: 5002}


def test_image_entrypoints_match_the_dockerfiles():
    """The harness runs an image's ENTRYPOINT for a container without command: keep them equal."""
    for dockerfile in (ROOT / "images").glob("*.Dockerfile"):
        entrypoint = re.search(r"^ENTRYPOINT (\[.*\])", dockerfile.read_text(), re.MULTILINE)
        name = f"distillery-{dockerfile.name.removesuffix('.Dockerfile')}"
        assert entrypoint, dockerfile
        assert image_entrypoint(f"registry.local/x/{name}:dev", IMAGE_ENTRYPOINTS) == json.loads(
            entrypoint.group(1)
        ), dockerfile
    assert image_entrypoint("busybox:1.36", IMAGE_ENTRYPOINTS) is None


def test_exit_code_of_a_signalled_process():
    assert exit_code(-9) == 137 and exit_code(3) == 3
    assert sys.platform.startswith("linux")  # process groups and /proc: the harness is Linux-only
