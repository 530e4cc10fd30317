"""Shared pytest setup. Tier markers (unit, integration, stages, e2e) are set per module."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hack"))  # tests use the hack/ scripts (tiny models, generators)

# Session fixtures: `tiny_models` and ONE shared vLLM teacher (`vllm_teacher`); `make_cluster`
# (tests/support/cluster.py), the emulated cluster the harness-backed tiers start.
pytest_plugins = ["tests.fixtures_models", "tests.support.cluster"]
