"""What kopf does per watch event for the operator: the operator registers index and event handlers
only, so kopf's diff of every body against the last handled state (for change handlers) is skipped."""

from __future__ import annotations

import pytest

from distillery.controller import handlers

pytestmark = pytest.mark.unit


def test_no_change_handlers_so_no_diff_base_is_kept():
    """`configure` gives kopf a diff-base storage that keeps nothing (`NoDiffBase`): right only while no
    on.create / on.update / on.field handler exists, which would then never see a change."""
    registry = handlers.registry
    assert list(registry._changing.get_all_handlers()) == []
    assert list(registry._spawning.get_all_handlers()) == []  # daemons and timers diff too
    kinds = {h.id for h in registry._watching.get_all_handlers()} | {
        h.id for h in registry._indexing.get_all_handlers()
    }
    assert len(kinds) == 2 * (1 + len(handlers.CHILD_KINDS)), kinds
    storage = handlers.NoDiffBase()
    assert storage.build(body={"spec": {"a": 1}}) is None and storage.fetch(body={}) is None
