"""What a user sees of the faults a job meets: a Warning Event per fault class at most once a minute, and a
short record per class in `status.faults` that changes only when an Event is posted.

Two kinds of fault classes:
- the operator's own (`apiclient.fault_reason`: throttled, server_error, timeout, unreachable, refused,
  unexpected): each API request it retried, and each reconcile that failed, while it reconciled the job;
- the stages': a stage Job's failed pods and its pods' container restarts, and the teacher's container
  restarts (`<stage>_restarted`, e.g. `teacher_restarted`, `generate_restarted`).

Pure, except `Recorder` (the per-job log of the operator's faults, kept in memory).
"""

from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from distillery.api import FaultStatus
from distillery.controller.steps import now_text, parse_time

# A class of fault gets at most one Event (and one status change) per job this often: a throttled API
# server met by every request must not become thousands of Events, which would add to its load.
EVENT_INTERVAL_SECONDS = 60.0
# "N times in the last minute" counts the occurrences this long before the Event.
WINDOW_SECONDS = 60.0
RETRYING = "Retrying"  # the Event reason of the operator's own faults
RESTARTED = "Restarted"  # the Event reason of a stage's restarted or replaced pods

# The operator's fault classes in words (keys: `apiclient.fault_reason`).
DESCRIPTIONS = {
    "throttled": "API server throttled (429)",
    "server_error": "API server error (5xx)",
    "timeout": "API request timed out",
    "unreachable": "API server unreachable",
    "refused": "API request refused (4xx)",
    "unexpected": "operator error (see its log)",
}
RESTART_SUFFIX = "_restarted"


def restart_class(stage: str) -> str:
    return f"{stage}{RESTART_SUFFIX}"


def should_post(fault_class: str, posted: Mapping[str, datetime], now: datetime) -> bool:
    """Whether an Event for `fault_class` may be posted at `now`, given when each class's last one was."""
    last = posted.get(fault_class)
    return last is None or (now - last).total_seconds() >= EVENT_INTERVAL_SECONDS


@dataclass(frozen=True)
class Notice:
    """One Event to post (a Warning) and the record it leaves in status."""

    fault_class: str
    reason: str
    message: str


def posted_times(faults: Mapping[str, FaultStatus]) -> dict[str, datetime]:
    """When each class's last Event was posted, as status records it (survives an operator restart)."""
    out = {}
    for name, record in faults.items():
        when = parse_time(record.last_time)
        if when is not None:
            out[name] = when
    return out


def report(
    previous: Mapping[str, FaultStatus],
    operator: Mapping[str, tuple[int, int]],
    restarts: Mapping[str, int],
    now: datetime,
    posted: Mapping[str, datetime] | None = None,
) -> tuple[dict[str, FaultStatus], list[Notice]]:
    """The new `status.faults` and the Events to post.

    `operator`: class -> (occurrences not reported yet, occurrences in the last minute);
    `restarts`: stage -> restarts observed so far (`observe.JobState.restarts`, `TeacherState.restarts`);
    `posted`: when each class's last Event went out (default: from `previous`). A class whose Event is
    not due yet is left out of the notices (its caller keeps it pending) and its record unchanged, so
    status does not move on every reconcile."""
    posted = dict(posted if posted is not None else posted_times(previous))
    faults = dict(previous)
    notices = []
    stamp = now_text(now)
    for name, (new, recent) in sorted(operator.items()):
        if new <= 0 or not should_post(name, posted, now):
            continue
        count = (faults[name].count if name in faults else 0) + new
        # Usually posted within the minute of the faults; one left pending longer says how many in all.
        when = f"{_times(recent)} in the last minute" if recent else f"{_times(new)} since its last Event"
        message = f"{DESCRIPTIONS.get(name, name)}: retrying; {when}"
        faults[name] = FaultStatus(count=count, last_time=stamp, message=message)
        notices.append(Notice(name, RETRYING, message))
    for stage, seen in sorted(restarts.items()):
        name = restart_class(stage)
        known = faults[name].count if name in faults else 0
        if seen <= known or not should_post(name, posted, now):
            continue
        what = "a replica restarted" if stage == "teacher" else "a pod failed or restarted and was retried"
        message = f"{stage}: {what}; {seen} restart{'s' if seen != 1 else ''} so far"
        faults[name] = FaultStatus(count=seen, last_time=stamp, message=message)
        notices.append(Notice(name, RESTARTED, message))
    return faults, notices


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def next_due(
    faults: Mapping[str, FaultStatus], pending: Mapping[str, int], restarts: Mapping[str, int], now: datetime
) -> float | None:
    """Seconds until a fault left unreported (its class posted less than a minute ago) may be posted."""
    waits = []
    posted = posted_times(faults)
    due = {name for name, new in pending.items() if new > 0}
    due |= {
        restart_class(stage)
        for stage, seen in restarts.items()
        if seen > (faults[restart_class(stage)].count if restart_class(stage) in faults else 0)
    }
    for name in due:
        last = posted.get(name)
        if last is not None:
            waits.append(max(0.0, EVENT_INTERVAL_SECONDS - (now - last).total_seconds()))
    return min(waits) if waits else None


# ------------------------------------------------------------------ the operator's own faults, per job

# The faults the API client met during the reconcile running in this task (`note`); None outside one.
_current: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("distillery_faults", default=None)


def note(fault_class: str) -> None:
    """Count a fault against the job being reconciled (the API client calls this on every retry)."""
    found = _current.get()
    if found is not None:
        found.append(fault_class)


class Recorder:
    """Per job: the times of its recent faults and how many of each class no Event has reported yet."""

    LIMIT = 1000  # recent occurrences kept per class: bounded, whatever the API server does

    def __init__(self) -> None:
        self._recent: dict[tuple[str, str], dict[str, deque[datetime]]] = {}
        self._pending: dict[tuple[str, str], dict[str, int]] = {}
        # When this operator last posted each class's Event: status says it too, but its write can fail.
        self._posted: dict[tuple[str, str], dict[str, datetime]] = {}

    def start(self) -> contextvars.Token:
        """Collect the faults of the reconcile that starts now (in this task); `stop` with the token."""
        return _current.set([])

    def collect(self, key: tuple[str, str], now: datetime) -> None:
        """Move the faults noted so far in this reconcile into the job's log."""
        found = _current.get()
        if found:
            self.add(key, list(found), now)
            found.clear()

    def stop(self, key: tuple[str, str], token: contextvars.Token, now: datetime) -> None:
        self.collect(key, now)
        _current.reset(token)

    def add(self, key: tuple[str, str], classes: list[str], now: datetime) -> None:
        recent = self._recent.setdefault(key, {})
        pending = self._pending.setdefault(key, {})
        for name in classes:
            recent.setdefault(name, deque(maxlen=self.LIMIT)).append(now)
            pending[name] = pending.get(name, 0) + 1

    def operator(self, key: tuple[str, str], now: datetime) -> dict[str, tuple[int, int]]:
        """class -> (not reported yet, in the last minute), for `report`."""
        since = now - timedelta(seconds=WINDOW_SECONDS)
        out = {}
        for name, new in self._pending.get(key, {}).items():
            times = self._recent.get(key, {}).get(name, ())
            out[name] = (new, sum(1 for t in times if t > since))
        return out

    def pending(self, key: tuple[str, str]) -> dict[str, int]:
        return dict(self._pending.get(key, {}))

    def posted(self, key: tuple[str, str], faults: Mapping[str, FaultStatus]) -> dict[str, datetime]:
        """When each class's last Event went out: the later of status's record and this operator's."""
        out = posted_times(faults)
        for name, when in self._posted.get(key, {}).items():
            out[name] = max(when, out.get(name, when))
        return out

    def due(self, key: tuple[str, str], now: datetime) -> float | None:
        """Seconds until the earliest pending fault of the job may be posted (0: now); None when none is
        pending. For faults met after the reconcile's report (its own status write retried)."""
        posted = self._posted.get(key, {})
        waits = [
            max(0.0, EVENT_INTERVAL_SECONDS - (now - posted[name]).total_seconds()) if name in posted else 0.0
            for name, new in self._pending.get(key, {}).items()
            if new > 0
        ]
        return min(waits) if waits else None

    def reported(self, key: tuple[str, str], classes: list[str], now: datetime) -> None:
        """The Events of `classes` went out (or were attempted): their occurrences are no longer pending."""
        pending = self._pending.get(key, {})
        posted = self._posted.setdefault(key, {})
        for name in classes:
            pending.pop(name, None)
            posted[name] = now

    def forget(self, key: tuple[str, str]) -> None:
        for table in (self._recent, self._pending, self._posted):
            table.pop(key, None)
