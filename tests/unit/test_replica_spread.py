"""The round robin over a served teacher's replicas (`serving.replicas`): turns, a replica marked down,
re-resolution, and the URLs it hands out. The real spread over two vLLM servers is in
tests/stages/test_teacher_replicas.py."""

from __future__ import annotations

from collections import Counter

import pytest

from distillery.api import TeacherSpec
from distillery.serving.client import teacher_connection
from distillery.serving.replicas import DOWN_SECONDS, REFRESH_SECONDS, Replicas
from tests.support.clock import Clock

pytestmark = pytest.mark.unit


class Dns:
    """Answers like a headless Service's name: the ready pods' IPs, as the test sets them."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.lookups = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups += 1
        if not self.addresses:
            raise OSError("Name or service not known")
        return list(self.addresses)


def picks(replicas: Replicas, n: int) -> Counter:
    out = Counter()
    for _ in range(n):
        if replicas.due:
            replicas.refresh()
        out[replicas.pick()] += 1
    return out


def test_each_request_goes_to_the_next_replica_in_turn():
    dns, clock = Dns("10.0.0.7", "10.0.0.5", "10.0.0.6"), Clock()
    replicas = Replicas("http://teacher:8000/v1/", dns, clock)
    counts = picks(replicas, 300)
    assert counts == Counter({f"http://10.0.0.{i}:8000/v1": 100 for i in (5, 6, 7)})
    assert dns.lookups == 1  # resolved once until REFRESH_SECONDS pass


def test_a_failed_replica_gets_nothing_until_it_is_back_and_dns_changes_are_followed():
    dns, clock = Dns("10.0.0.1", "10.0.0.2"), Clock()
    replicas = Replicas("http://teacher:8000/v1", dns, clock)
    picks(replicas, 1)
    replicas.failed("http://10.0.0.2:8000/v1")
    assert replicas.due  # a failure makes the next pick look the name up again
    assert set(picks(replicas, 10)) == {"http://10.0.0.1:8000/v1"}
    clock.now += DOWN_SECONDS + 1
    assert set(picks(replicas, 10)) == {"http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"}
    # The pod was replaced: DNS lists the new IP; the old one is gone from the turn.
    dns.addresses = ["10.0.0.1", "10.0.0.3"]
    clock.now += REFRESH_SECONDS
    assert set(picks(replicas, 10)) == {"http://10.0.0.1:8000/v1", "http://10.0.0.3:8000/v1"}


def test_every_replica_down_still_tries_them_and_a_dns_failure_keeps_the_known_ones():
    dns, clock = Dns("10.0.0.1", "10.0.0.2"), Clock()
    replicas = Replicas("http://teacher:8000/v1", dns, clock)
    picks(replicas, 1)
    for address in ("10.0.0.1", "10.0.0.2"):
        replicas.failed(f"http://{address}:8000/v1")
    assert len(picks(replicas, 4)) == 2  # never stalls
    dns.addresses = []  # the lookup fails
    clock.now += REFRESH_SECONDS
    assert len(picks(replicas, 4)) == 2


def test_before_any_lookup_succeeds_the_url_is_used_as_given_and_ipv6_gets_brackets():
    replicas = Replicas("http://teacher:8000/v1", Dns(), Clock())
    assert picks(replicas, 2) == Counter({"http://teacher:8000/v1": 2})
    six = Replicas("http://teacher:8000/v1", Dns("fd00::5"), Clock())
    assert picks(six, 1) == Counter({"http://[fd00::5]:8000/v1": 1})


def test_only_the_served_teacher_is_spread_an_endpoint_is_used_as_is():
    served = teacher_connection(TeacherSpec(model="m"), "http://j-teacher:8000/v1", environ={})
    assert served.replicas() is not None and served.replicas().host == "j-teacher"
    endpoint = TeacherSpec(endpoint={"url": "https://llm.example.com/v1", "model": "gpt"})
    assert teacher_connection(endpoint, environ={}).replicas() is None
    with pytest.raises(ValueError, match="host name"):
        Replicas("http:///v1")
