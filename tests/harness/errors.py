"""The two ways the harness says no."""

from __future__ import annotations


class HarnessError(RuntimeError):
    """The harness met something it cannot emulate, or failed itself; the test must fail."""


class ConfigError(Exception):
    """A pod cannot start yet (missing Secret, ConfigMap...): the kubelet's CreateContainerConfigError."""
