"""The typed hand-offs between processes: each written by its producer and read back by every consumer
through the one model in `contract/` (records, the evaluation report, the stages' series names)."""

from __future__ import annotations

import importlib

import pytest

from distillery.contract import series

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------ series


def exported(registry) -> set[str]:
    """The Distillery series a registry exports, named as constructed (a counter with its `_total`)."""
    names = set()
    for family in registry.collect():
        if family.name.startswith("distillery_"):
            names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


@pytest.mark.parametrize(
    "stage, module",
    [("generate", "generation"), ("train", "training"), ("evaluate", "evaluation")],
)
def test_the_series_constants_are_exactly_what_each_stage_process_exports(stage, module):
    registry = importlib.import_module(f"distillery.{module}.metrics").REGISTRY
    assert exported(registry) == set(series.BY_STAGE[stage])


@pytest.mark.parametrize("stage, module", [("train", "training"), ("evaluate", "evaluation")])
def test_the_operator_finds_its_progress_series_in_a_stage_pods_scrape(stage, module):
    from prometheus_client import generate_latest

    from distillery.controller.progress import SERIES, samples

    scraped = samples(
        generate_latest(importlib.import_module(f"distillery.{module}.metrics").REGISTRY).decode()
    )
    assert set(SERIES[stage].values()) <= set(scraped) & set(series.BY_STAGE[stage])
