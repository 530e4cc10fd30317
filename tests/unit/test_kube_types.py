"""The Kubernetes value types refuse exactly what the API server refuses (or a little more, never less).

Two oracles: apimachinery's own unit-test tables (copied below from
k8s.io/apimachinery pkg/util/validation/validation_test.go, pkg/api/validate/content/kube_test.go
and pkg/api/resource/quantity_test.go), and `apiserver.py`, the step-by-step port of the Go
checks, compared with the models on thousands of generated strings around every length limit.
"""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from pydantic import TypeAdapter, ValidationError

from distillery.api.kube_types import (
    DnsLabel,
    DnsSubdomain,
    LabelValue,
    PositiveQuantity,
    QualifiedName,
    Quantity,
    QueueName,
    ResourceName,
    SecretKey,
    parse_quantity,
)
from tests.unit import apiserver

pytestmark = pytest.mark.unit

# ---------------------------------------------------------------- apimachinery's tables

SUBDOMAIN_GOOD = [
    "a", "ab", "abc", "a1", "a-1", "a--1--2--b", "0", "01", "012", "1a", "1-a", "1--a--b--2",
    "a.a", "ab.a", "abc.a", "a1.a", "a-1.a", "a--1--2--b.a", "a.1", "ab.1", "abc.1", "a1.1", "a-1.1",
    "a--1--2--b.1", "0.a", "01.a", "012.a", "1a.a", "1-a.a", "0.1", "01.1", "012.1", "1a.1", "1-a.1",
    "1--a--b--2.1", "a.b.c.d.e", "aa.bb.cc.dd.ee", "1.2.3.4.5", "11.22.33.44.55", "a" * 253,
]  # fmt: skip  # packed value list, as in the Kubernetes validation tests it mirrors
SUBDOMAIN_BAD = [
    "", "A", "ABC", "aBc", "A1", "A-1", "1-A", "-", "a-", "-a", "1-", "-1", "_", "a_", "_a", "a_b", "1_",
    "_1", "1_2", ".", "a.", ".a", "a..b", "1.", ".1", "1..2", " ", "a ", " a", "a b", "1 ", " 1", "1 2",
    "A.a", "aB.a", "ab.A", "A1.a", "a1.A", "A.1", "aB.1", "A1.1", "1A.1", "0.A", "01.A", "012.A", "1A.a",
    "1a.A", "A.B.C.D.E", "AA.BB.CC.DD.EE", "a.B.c.d.e", "aa.bB.cc.dd.ee", "a@b", "a,b", "a;b", "a:b",
    "a%b", "a?b", "a$b", "a" * 254,
]  # fmt: skip  # packed value list, as in the Kubernetes validation tests it mirrors
LABEL_KEY_GOOD = [
    "simple", "now-with-dashes", "1-starts-with-num", "1234", "simple/simple", "now-with-dashes/simple",
    "now-with-dashes/now-with-dashes", "now.with.dots/simple", "now-with.dashes-and.dots/simple",
    "1-num.2-num/3-num", "1234/5678", "1.2.3.4/5678", "Uppercase_Is_OK_123",
    "example.com/Uppercase_Is_OK_123", "requests.storage-foo", "a" * 63, "a" * 253 + "/" + "b" * 63,
]  # fmt: skip  # packed value list, as in the Kubernetes validation tests it mirrors
LABEL_KEY_BAD = [
    "nospecialchars%^=@", "cantendwithadash-", "-cantstartwithadash-", "only/one/slash", "Example.com/abc",
    "example_com/abc", "example.com/", "/simple", "a" * 64, "a" * 254 + "/abc",
]  # fmt: skip  # packed value list, as in the Kubernetes validation tests it mirrors
LABEL_VALUE_GOOD = ["simple", "now-with-dashes", "1-starts-with-num", "end-with-num-1", "1234", "a" * 63, ""]
LABEL_VALUE_BAD = [
    "nospecialchars%^=@", "Tama-nui-te-rā.is.Māori.sun", "\\backslashes\\are\\bad", "-starts-with-dash",
    "ends-with-dash-", ".starts.with.dot", "ends.with.dot.", "a" * 64,
]  # fmt: skip  # packed value list, as in the Kubernetes validation tests it mirrors
CONFIG_KEY_GOOD = ["a", "good", "good-good", "still.good", "this.is.also.good", ".so.is.this", "THIS_IS_GOOD",
                   "so_is_this_17"]  # fmt: skip  # packed value list, as in the Kubernetes validation tests it mirrors
CONFIG_KEY_BAD = [".", "..", "..bad", "b*d", "bad!&bad"]
# Every input TestQuantityParse parses (the negative ones are left out: resources refuse them).
QUANTITY_GOOD = [
    "0", "0n", "0u", "0m", "0Ki", "0k", "0Mi", "0M", "0Gi", "0G", "0Ti", "0T", "1", "1Ki", "8Ki", "7Mi",
    "6Gi", "5Ti", "4Pi", "3Ei", "10Ti", "100Ti", "5n", "4u", "3m", "9", "8k", "50k", "7M", "6G", "5T",
    "40T", "300T", "2P", "1E", "1E-3", "1e3", "1E6", "1e9", "1E12", "1e15", "1E18", "1e14", "1e13",
    "100.035k", "0.001", "0.0005k", "0.005", "0.05", "0.5", "0.00050k", "0.00500", "0.05000", "0.50000",
    "0.5e0", "0.5e-1", "0.5e-2", "10.035M", "1.2e3", "1.3E+6", "1.40e9", "1.53E12", "1.6e15", "1.7E18",
    "9.01", "8.1k", "7.123456M", "6.987654321G", "5.444T", "40.1T", "300.2T", "2.5P", "1.01E", "3.001n",
    "1.1E-9", "0.0000000001", "0.0000000005", "0.00000000050", "0.5e-9", "0.9n", "0.00000012345",
    "0.00000012354", "9Ei", "9223372036854775807Ki", "12E", "100.035Ki", "0.5Mi", "0.05Gi", "0.025Ti",
    "0.000000000001Ki", ".001", ".0001k", "1.", "1.G",
]  # fmt: skip  # packed value list, as in the Kubernetes validation tests it mirrors
QUANTITY_BAD = ["1.1.M", "1+1.0M", "0.1mi", "0.1am", "aoeu", ".5i", "1i", "-3.01i", "-3.01e-", " 1", "1 ", ""]


_ADAPTERS: dict[int, TypeAdapter] = {}


def accepts(kind, value) -> bool:
    if id(kind) not in _ADAPTERS:
        _ADAPTERS[id(kind)] = TypeAdapter(kind)
    adapter = _ADAPTERS[id(kind)]
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


TABLES = [
    (DnsSubdomain, apiserver.is_dns1123_subdomain, SUBDOMAIN_GOOD, SUBDOMAIN_BAD),
    (QualifiedName, apiserver.is_qualified_name, LABEL_KEY_GOOD, LABEL_KEY_BAD),
    (LabelValue, apiserver.is_label_value, LABEL_VALUE_GOOD, LABEL_VALUE_BAD),
    (SecretKey, apiserver.is_config_map_key, CONFIG_KEY_GOOD, CONFIG_KEY_BAD),
]


@pytest.mark.parametrize(("kind", "oracle", "good", "bad"), TABLES, ids=lambda x: getattr(x, "__name__", ""))
def test_apimachinery_tables(kind, oracle, good, bad):
    assert [v for v in good if not oracle(v)] == [], "the port disagrees with apimachinery"
    assert [v for v in bad if oracle(v)] == [], "the port disagrees with apimachinery"
    assert [v for v in good if not accepts(kind, v)] == []
    assert [v for v in bad if accepts(kind, v)] == []


def test_quantity_tables():
    for text in QUANTITY_GOOD:
        assert accepts(Quantity, text), text
        assert parse_quantity(text) == apiserver.parse_quantity(text), text
    for text in QUANTITY_BAD:
        assert not accepts(Quantity, text), text
        with pytest.raises(ValueError):
            apiserver.parse_quantity(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", 2),
        ("500m", Decimal("0.5")),
        ("16Gi", 16 * 2**30),
        ("1e3", 1000),
        ("1.5Gi", 1610612736),
        ("0.1n", Decimal("1e-9")),
        ("1E", 10**18),
        ("1E-3", Decimal("0.001")),
        (7, 7),
    ],
)
def test_parse_quantity_values(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["2 GiB", "-1", "1e", "1Gb", "16GB", "1.5 ", "+", ".", "1e1.5", "0x10"])
def test_not_quantities(text):
    assert not accepts(Quantity, text)


def test_positive_quantity_refuses_every_zero():
    for text in ["0", "0Gi", "0.0", "00.000m", ".0", "0e9", "0.", 0]:
        assert accepts(Quantity, text) and not accepts(PositiveQuantity, text), text
    for text in ["1", "0.1", "0.5Gi", ".5", "1e-3", "10", 1]:
        assert accepts(PositiveQuantity, text), text


# ---------------------------------------------------------------- generated strings around every limit


def _corpus(alphabet: str, lengths: list[int], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        length = rng.choice(lengths)
        pieces = [rng.choice(alphabet) for _ in range(length)]
        if length and rng.random() < 0.5:  # mostly valid-looking: alphanumeric ends
            pieces[0], pieces[-1] = rng.choice("az09"), rng.choice("az09")
        out.append("".join(pieces))
    return out


NEAR_LIMITS = [0, 1, 2, 3, 5, 62, 63, 64, 65, 252, 253, 254, 316, 317, 318]


@pytest.mark.parametrize(
    ("kind", "oracle", "alphabet"),
    [
        (DnsSubdomain, apiserver.is_dns1123_subdomain, "aaab09-..A_"),
        (DnsLabel, apiserver.is_dns1123_label, "aaab09-.A"),
        (QualifiedName, apiserver.is_qualified_name, "aaabZ09-._/"),
        (LabelValue, apiserver.is_label_value, "aaabZ09-._/ "),
        (SecretKey, apiserver.is_config_map_key, "aaZ09-._/*"),
    ],
    ids=["subdomain", "label", "qualified", "labelvalue", "secretkey"],
)
def test_models_agree_with_the_api_server_on_generated_strings(kind, oracle, alphabet):
    corpus = _corpus(alphabet, NEAR_LIMITS, 4000, seed=16)
    # Qualified names with a long prefix and short name: the limit on each part.
    corpus += ["a" * n + "/" + "b" * m for n in (252, 253, 254) for m in (62, 63, 64)]
    disagree = [(v, accepts(kind, v), oracle(v)) for v in corpus if accepts(kind, v) != oracle(v)]
    assert disagree == []
    assert sum(map(oracle, corpus)) > 100, "the corpus should hold valid values too"


def test_resource_names():
    good = [
        "cpu",
        "memory",
        "ephemeral-storage",
        "hugepages-2Mi",
        "hugepages-1Gi",
        "nvidia.com/gpu",
        "amd.com/gpu",
        "example.com/Foo_Bar",
        "kubernetes.io/whatever",
        "a" * 244 + "/x",
    ]
    bad = [
        "gpu",
        "CPU",
        "storage",
        "hugepages-",
        "hugepages-0",
        "requests.example.com/x",
        "nvidia.com/",
        "nvidia.com/gpu/x",
        "a" * 245 + "/x",
        "Example.com/x",
    ]
    for name in good:
        assert accepts(ResourceName, name) and not apiserver._resource_name_errors(name), name
    for name in bad:
        assert not accepts(ResourceName, name), name
        assert apiserver._resource_name_errors(name) or name.startswith("requests."), name


def test_queue_name_is_a_local_queue_name_and_a_label_value():
    for name in ["team-a", "a", "q.1", "a" * 63]:
        assert accepts(QueueName, name)
        assert apiserver.is_dns1123_subdomain(name) and apiserver.is_label_value(name)
    for name in ["Team", "team_a", "a" * 64, "", "-a"]:
        assert not accepts(QueueName, name)
