"""Find the external command-line tools that tests run for real: helm, promtool, prometheus.

`hack/install-tools.sh` installs them. Lookup order for each tool:

1. an environment variable naming the binary (``DISTILLERY_HELM``, ``DISTILLERY_PROMTOOL``,
   ``DISTILLERY_PROMETHEUS``);
2. ``$DISTILLERY_TOOLS/bin`` (default ``~/.cache/distillery-tools/bin``), where the
   install script puts them;
3. ``PATH``.

A missing tool raises :class:`ToolNotFoundError`. Tests never skip on it: a CI run that
silently skipped the chart or alert tests would look green while checking nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

INSTALL_HINT = "run hack/install-tools.sh"


class ToolNotFoundError(RuntimeError):
    """A tool the tests need is not installed."""


def tools_dir() -> Path:
    """The cache directory hack/install-tools.sh installs into."""
    default = Path.home() / ".cache" / "distillery-tools"
    return Path(os.environ.get("DISTILLERY_TOOLS") or default)


def _find(name: str, env_var: str) -> str:
    override = os.environ.get(env_var)
    if override:
        # An explicit override that points nowhere is a mistake; do not fall back silently.
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise ToolNotFoundError(
            f"{env_var}={override!r} is not an executable file ({INSTALL_HINT}, or fix {env_var})"
        )

    cached = tools_dir() / "bin" / name
    # os.access follows links: a link to an uninstalled /usr/bin/promtool does not count.
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)

    found = shutil.which(name)
    if found:
        return found

    raise ToolNotFoundError(f"{name} not found (looked at ${env_var}, {cached} and PATH): {INSTALL_HINT}")


def helm_binary() -> str:
    """Path of the helm binary (v4, pinned by hack/install-tools.sh)."""
    return _find("helm", "DISTILLERY_HELM")


def promtool_binary() -> str:
    """Path of promtool (Debian's prometheus package)."""
    return _find("promtool", "DISTILLERY_PROMTOOL")


def prometheus_binary() -> str:
    """Path of the Prometheus server binary (Debian's prometheus package)."""
    return _find("prometheus", "DISTILLERY_PROMETHEUS")
