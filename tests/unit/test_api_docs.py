"""docs/api.md says what the validator does: each spec row's "allowed" text, tried on the real model.

For every row under `spec`, the documented values are read back from docs/api.md (not from the
schema the generator used) and set, one at a time, at that field of examples/tiny.yaml; the job
is validated by `distillery.errors.parse_job`, the parser `distillery validate` uses. A documented
value must raise no problem at that field, a value just outside must raise one there, and a
documented format (a Kubernetes name, a label key, a quantity) must be what the refusal's own
message says. A row whose words and the validator disagree (a claim name described as a queue
name) fails here.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from distillery.docs import render_api_docs
from distillery.errors import InvalidJob, parse_job

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
API_MD = ROOT / "docs" / "api.md"
BASE = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
BAD_FORMAT = "Not Valid!"  # outside every Kubernetes format the spec uses


@dataclass(frozen=True)
class Row:
    path: str  # spec.teacher.gpus
    type: str  # integer, list of string, map of string, ...
    allowed: str


def spec_rows(text: str) -> tuple[list[Row], dict[str, set[str]]]:
    """The rows under `spec`, and each field's documented rules across fields (path -> messages)."""
    rows, rules, section = [], {}, ""
    for line in text.split("Everything under `status`", 1)[0].splitlines():
        if line.startswith("### "):
            section = line[4:].strip()
        elif rule := re.match(r"- `([^`]+)`: (.*)", line):
            rules.setdefault(f"{section}.{rule[1]}", set()).add(rule[2])
        elif line.startswith("| ") and section and not line.startswith(("| field", "| ---")):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            name = re.search(r"`([^`]+)`", cells[0])[1]
            rows.append(Row(f"{section}.{name}", cells[1], cells[3].replace("\\|", "|")))
    return rows, rules


ROWS, RULES = spec_rows(API_MD.read_text())
TYPES = {row.path: row.type for row in ROWS}


def problems_at(path: str, value: Any) -> list[str]:
    """The problems parse_job reports at `path` (or inside it) when the base job has `value` there.

    A list of objects on the way (its row says `list of object`) holds one item, the row's field in it.
    """
    document = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node, written = document, ""
    for part in parents:
        listed = TYPES.get(f"{written}.{part}".lstrip(".").replace("[0]", ""), "").startswith("list of")
        node = node.setdefault(part, [{}] if listed else {})
        if isinstance(node, list):
            node = node[0]
        written = f"{written}.{part}[0]" if listed else f"{written}.{part}"
    node[last] = value
    where = f"{written}.{last}".lstrip(".")
    try:
        parse_job(document, "doc")
    except InvalidJob as error:
        return [
            p.message
            for p in error.problems
            if p.path == where or p.path.startswith((where + "[", where + "."))
        ]
    return []


def _number(text: str, kind: str) -> float | int:
    return int(text) if kind == "integer" else float(text)


def scalar_checks(allowed: str, kind: str, wrap) -> list[tuple[Any, bool, str]]:
    """(value, accepted?, why) for one value's documented constraints; `wrap` puts it where it goes."""
    checks: list[tuple[Any, bool, str]] = []
    members = re.match(r"one of ((?:`[^`]*`(?:, )?)+)", allowed)
    if members:
        names = re.findall(r"`([^`]*)`", members[1])
        checks += [(wrap(m), True, f"documented member {m}") for m in names]
        checks.append((wrap("zz-not-a-member"), False, "a value not listed"))
    kind = "integer" if "integer" in kind or "int or string" in kind else kind
    for op, bound in re.findall(r"(?<![a-z] )(>=|>|<=|<) (-?[0-9][0-9.e+-]*)", allowed):
        number = _number(bound, kind)
        step = 1 if kind == "integer" else max(abs(number) * 1e-6, 1e-9)
        inside = {">=": number, "<=": number, ">": number + step, "<": number - step}[op]
        outside = {">=": number - step, ">": number, "<=": number + step, "<": number}[op]
        checks += [
            (wrap(inside), True, f"{op} {bound}: {inside}"),
            (wrap(outside), False, f"{op} {bound}: {outside}"),
        ]
    if kind in ("integer", "number") and not members:
        # A bound the doc leaves out must not exist: far values on an open side are accepted.
        far = 10**12 if kind == "integer" else 1e12
        if not re.search(r"(?<![a-z] )[<]=? ", allowed):
            checks.append((wrap(far), True, f"no upper bound documented: {far}"))
        if not re.search(r"(?<![a-z] )[>]=? ", allowed):
            checks.append((wrap(-far), True, f"no lower bound documented: {-far}"))
    formatted = bool(
        re.search(r"\ba (DNS|label|Secret|container|Kubernetes|Kueue)|an absolute path|matches `", allowed)
    )
    for op, bound in re.findall(r"length (>=|<=) ([0-9]+)", allowed):
        n = int(bound)
        if not formatted:  # 'a' * n fits any plain string; a format row is checked by its words
            checks.append((wrap("a" * n), True, f"length {n}"))
        if op == "<=":
            checks.append((wrap("a" * (n + 1)), False, f"length {n + 1}"))
        elif n > 0 and not formatted:
            checks.append((wrap("a" * (n - 1)), False, f"length {n - 1}"))
    return checks


def _split(allowed: str, marker: str) -> tuple[str, str]:
    outer, _, inner = allowed.partition(marker)
    return outer, inner


def checks_for(row: Row) -> list[tuple[Any, bool, str]]:
    if row.type.startswith("list of"):
        outer, inner = _split(row.allowed, "each item: ")
        checks = scalar_checks(inner, row.type, lambda v: [v])
        for word, n in re.findall(r"at (least|most) ([0-9]+) items", outer):
            item = checks[0][0][0] if checks and checks[0][1] else {}
            n = int(n)
            if word == "least" and n > 0:
                checks.append(([], False, f"fewer than {n} items"))
            if word == "most":
                checks.append(([copy.deepcopy(item) for _ in range(n + 1)], False, f"{n + 1} items"))
        return checks
    if row.type.startswith("map of"):
        outer, inner = _split(row.allowed, "each value: ")
        checks = scalar_checks(inner, row.type, lambda v: {"cpu": v})  # a key every map of the spec takes
        for n in re.findall(r"at most ([0-9]+) entries", outer):
            checks.append(
                ({f"example.com/k{i}": "1" for i in range(int(n) + 1)}, False, f"{int(n) + 1} entries")
            )
        return checks
    return scalar_checks(row.allowed, row.type, lambda v: v)


def format_words(row: Row) -> tuple[Any, str] | None:
    """(a badly formatted value, the row's text it must be refused with), for a format row."""
    if row.type.startswith("map of") and "every key to be " in row.allowed:
        return {BAD_FORMAT: "1"}, row.allowed.split("every key to be ", 1)[1].split("; each value: ")[0]
    inner = row.allowed.split("each item: ")[-1].split("each value: ")[-1]
    words = [w for w in inner.split("; ") if not re.match(r"(one of|length|[<>]=?) ", w)]
    if not words or "matches `" in inner or not re.search(r"\ba |\ban ", words[0]):
        return None
    text = "; ".join(words)
    value = [BAD_FORMAT] if row.type.startswith("list of") else BAD_FORMAT
    return ({"cpu": BAD_FORMAT} if row.type.startswith("map of") else value), text


def test_api_md_is_what_distillery_docs_prints():
    assert API_MD.read_text() == render_api_docs(), "run python hack/update_generated.py"


def test_the_doc_has_the_spec_rows():
    paths = {row.path for row in ROWS}
    assert {"spec.generation.shards", "spec.storage.pvc.claimName", "spec.queueName"} <= paths
    assert sum(1 for row in ROWS if row.allowed) > 100


@pytest.mark.parametrize("row", [r for r in ROWS if checks_for(r)], ids=lambda r: r.path)
def test_documented_values_are_what_the_validator_accepts(row: Row):
    for value, accepted, why in checks_for(row):
        problems = problems_at(row.path, value)
        if accepted:
            # A rule across fields (documented under the section) may still refuse a value on its own.
            problems = [p for p in problems if p not in RULES.get(row.path, set())]
            assert problems == [], f"{row.path}: docs say {row.allowed!r}; {why} refused: {problems}"
        else:
            assert problems, f"{row.path}: docs say {row.allowed!r}; {why} accepted"
            listed = re.match(r"one of ((?:`[^`]*`(?:, )?)+)", row.allowed.split("each item: ")[-1])
            if why == "a value not listed" and listed:
                # The refusal names every member the validator takes: the doc must list the same.
                taken = set(re.findall(r"'([^']*)'", problems[0].split(" (got ")[0]))
                assert taken == set(re.findall(r"`([^`]*)`", listed[1])), (
                    f"{row.path}: validator takes {taken}"
                )


@pytest.mark.parametrize("row", [r for r in ROWS if format_words(r)], ids=lambda r: r.path)
def test_documented_format_is_the_validators_message(row: Row):
    value, words = format_words(row)
    problems = problems_at(row.path, value)
    assert problems, f"{row.path}: {value!r} accepted"
    assert any(words in p for p in problems), f"{row.path}: docs say {words!r}; the validator says {problems}"


def test_a_wrong_row_fails():
    """The check can fail: the old text (a claim name described as a queue name) is refused."""
    row = Row(
        "spec.storage.pvc.claimName",
        "string",
        "length <= 63; a Kueue LocalQueue name that fits in a label value: at most 63 lowercase letters",
    )
    value, words = format_words(row)
    assert not any(words in p for p in problems_at(row.path, value))
    assert problems_at(row.path, "a" * 64) == []  # a claim name may be longer than 63
