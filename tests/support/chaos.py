"""The chaos run's fault driver: a seeded schedule of pod kills and drains, applied while a job runs.

`schedule(seed, duration)` is pure: every 15-30 s (drawn from the seed) a fault, SIGKILL of a pod's
container (a crash, an OOM kill) or an eviction as a node drain makes it (a graceful delete, then
forced), aimed at one role: the operator or one of the job's pods (check, teacher, generation shard,
training, evaluation). `ChaosDriver` applies it in a thread of its own against a harness cluster
(tests/support/cluster.py) until the job is terminal, and samples the job's status meanwhile.

So that the job can finish, a fault only hits a role whose pod is up (running and ready), never the
same role twice within `COOLDOWN_SECONDS` (past its restart back-off and start), and each role at
most `MAX_HITS` times; a fault whose role cannot be hit goes to another role that can (drawn from the
seed), or is skipped. `triggers` add faults that fire once when a condition first holds (the test
kills training once it has a checkpoint, so a resume from one is seen whatever the timing).

Each fault is printed as it is injected (time, kind, role, pod), after the seed, so that a failure
can be replayed: `DISTILLERY_CHAOS_SEED=N pytest -m chaos tests/containers/test_chaos.py`.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tests.harness.errors import HarnessError
from tests.harness.rest import api_path
from tests.support.probes import job_status

KILL, EVICT = "kill", "evict"
ROLES = ("operator", "check", "teacher", "generate", "train", "evaluate")
GAP_SECONDS = (15.0, 30.0)
EVICT_SHARE = 0.25
# Hits per role and run: evaluation and the teacher restart vLLM from nothing (a minute or more on 2
# busy cores), so more of them only makes the run longer, not the test stronger.
MAX_HITS = {"operator": 4, "check": 1, "teacher": 1, "generate": 2, "train": 2, "evaluate": 1}
COOLDOWN_SECONDS = 30.0  # the harness kubelet's restart back-off is at most 10 s
DRAIN_GRACE_SECONDS = 3.0  # a drain's graceful delete; what still runs after it is killed (forced)
TICK_SECONDS = 0.25
TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Fault:
    at: float  # seconds from the driver's start
    kind: str  # KILL or EVICT
    target: str  # one of ROLES


def schedule(seed: int, duration: float) -> list[Fault]:
    """The faults of a run of `duration` seconds: one every 15-30 s, a quarter of them drains (at least
    one among the first three, while the job surely runs), each aimed at a role; all drawn from `seed`."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    at = rng.uniform(*GAP_SECONDS)
    while at <= duration:
        kind = EVICT if rng.random() < EVICT_SHARE else KILL
        faults.append(Fault(round(at, 1), kind, rng.choice(ROLES)))
        at += rng.uniform(*GAP_SECONDS)
    if faults and all(f.kind != EVICT for f in faults[:3]):
        index = rng.randrange(min(3, len(faults)))
        faults[index] = replace(faults[index], kind=EVICT)
    return faults


def role_of(namespace: str, owner: str, job_name: str, operator_namespace: str) -> str | None:
    """The role of a pod: `operator` in the operator's namespace, else the stage its owner is named for
    (`Job/<job>-train` -> train); None for anything else."""
    if namespace == operator_namespace:
        return "operator"
    name = owner.partition("/")[2]
    role = name.removeprefix(f"{job_name}-") if name.startswith(f"{job_name}-") else ""
    return role if role in ROLES else None


def eligible(
    up: Iterable[str], hits: Mapping[str, int], last_hit: Mapping[str, float], now: float
) -> list[str]:
    """The roles a fault may hit now: up, under their hit cap, and out of their cool-down; sorted."""
    return sorted(
        role
        for role in set(up)
        if hits.get(role, 0) < MAX_HITS[role]
        and now - last_hit.get(role, -COOLDOWN_SECONDS) >= COOLDOWN_SECONDS
    )


def choose(target: str, candidates: list[str], rng: random.Random) -> str | None:
    """The role a fault hits: its target when it can be hit, else one of the candidates, else None."""
    if target in candidates:
        return target
    return rng.choice(candidates) if candidates else None


def phase_violations(phases: Iterable[str | None]) -> list[str]:
    """Where a sampled status phase was lost (absent or empty once set) or went back to Pending."""
    problems, seen = [], None
    for number, phase in enumerate(phases):
        if seen is not None and not phase:
            problems.append(f"sample {number}: phase lost (was {seen})")
        elif phase == "Pending" and seen not in (None, "Pending"):
            problems.append(f"sample {number}: back to Pending from {seen}")
        seen = phase or seen
    return problems


RESULT = "chaos-result "  # the line a chaos run ends with, which hack/bench_chaos.py reads


def result_line(seed: int | None, wall_seconds: float, faults: Mapping[str, int]) -> str:
    return RESULT + json.dumps({"seed": seed, "wall_seconds": round(wall_seconds, 1), "faults": dict(faults)})


def parse_result(output: str) -> dict[str, Any] | None:
    """The last `result_line` in a run's output, decoded; None when it printed none (it broke before)."""
    lines = [line for line in output.splitlines() if line.startswith(RESULT)]
    return json.loads(lines[-1][len(RESULT) :]) if lines else None


@dataclass
class Injected:
    at: float
    kind: str
    role: str
    pod: str

    def line(self, seed: int) -> str:
        return f"chaos seed={seed} {self.at:7.1f}s {self.kind:5} {self.role:8} {self.pod}"


@dataclass
class ChaosDriver:
    """Applies `faults` (and `triggers`: (condition, fault) pairs, each fired once when its condition first
    holds) to `cluster`'s pods while the DistillationJob `job_name` runs; samples its status phase."""

    cluster: Any
    seed: int
    faults: list[Fault]
    job_namespace: str
    operator_namespace: str
    job_name: str = "tiny"
    triggers: list[tuple[Callable[[], bool], Fault]] = field(default_factory=list)
    injected: list[Injected] = field(default_factory=list)
    skipped: list[Fault] = field(default_factory=list)
    phases: list[tuple[float, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="chaos", daemon=True)
        self._hits: Counter = Counter()
        self._last_hit: dict[str, float] = {}
        self.started = 0.0

    def __enter__(self) -> ChaosDriver:
        self.started = time.monotonic()
        print(
            f"\nchaos seed={self.seed}: {len(self.faults)} faults scheduled (DISTILLERY_CHAOS_SEED={self.seed})"
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    @property
    def finished(self) -> bool:
        return bool(self.phases) and self.phases[-1][1] in TERMINAL

    def counts(self) -> Counter:
        return Counter(i.kind for i in self.injected) + Counter({"skipped": len(self.skipped)})

    def _main(self) -> None:
        pending, triggers = list(self.faults), list(self.triggers)
        api = self.cluster.api(self.job_namespace)
        while not self._stop.is_set():
            now = time.monotonic() - self.started
            try:
                phase = job_status(api, self.job_name).get("phase")
            except Exception as error:  # the emulator is direct and local: this is the harness failing
                self.errors.append(f"{now:.1f}s reading the job: {error!r}")
                phase = self.phases[-1][1] if self.phases else None
            self.phases.append((now, phase))
            if phase in TERMINAL:
                return  # stop injecting once the job is terminal
            for trigger in list(triggers):
                condition, fault = trigger
                if condition() and self._apply(replace(fault, at=round(now, 1)), trigger=True):
                    triggers.remove(trigger)
            while pending and pending[0].at <= now:
                self._apply(pending.pop(0))
            self._stop.wait(TICK_SECONDS)

    def _apply(self, fault: Fault, *, trigger: bool = False) -> bool:
        """Inject `fault` now; False when nothing could be hit (a trigger then waits for its next chance)."""
        now = time.monotonic() - self.started
        up: dict[str, list[Any]] = {}
        for pod in self.cluster.kubelet.pods():
            role = role_of(pod.namespace, pod.owner, self.job_name, self.operator_namespace)
            if role is not None and pod.ready and pod.pid is not None and not pod.deleted:
                up.setdefault(role, []).append(pod)
        if trigger:  # its role only, whatever the cap (not within a cool-down)
            candidates = [r for r in eligible(up, {}, self._last_hit, now) if r == fault.target]
        else:
            candidates = eligible(up, self._hits, self._last_hit, now)
        role = choose(fault.target, candidates, self._rng)
        if role is None:
            if not trigger:
                self.skipped.append(fault)
                print(f"chaos seed={self.seed} {now:7.1f}s skip  {fault.target:8} (nothing can be hit)")
            return False
        pod = self._rng.choice(sorted(up[role], key=lambda p: p.name))
        self._hits[role] += 1
        self._last_hit[role] = now
        record = Injected(round(now, 1), fault.kind, role, f"{pod.namespace}/{pod.name}")
        self.injected.append(record)
        print(record.line(self.seed), flush=True)
        try:
            if fault.kind == KILL:
                self.cluster.kubelet.kill(pod.name, signal.SIGKILL)
            else:
                self._drain(pod)
        except HarnessError as error:  # it ended on its own in between
            self.errors.append(f"{record.line(self.seed)}: {error}")
        return True

    def _drain(self, pod: Any) -> None:
        """As `kubectl drain` evicts: delete the pod with a grace period (the kubelet sends SIGTERM), then,
        if it still runs after the grace, kill what is left (a forced delete: the object is already gone
        from the emulator, which does not keep terminating pods)."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": int(DRAIN_GRACE_SECONDS)}
        self.cluster.api(pod.namespace).call("DELETE", api_path("v1", "pods", pod.namespace, pod.name), body)

        def force() -> None:
            current = next((p for p in self.cluster.kubelet.pods() if p.name == pod.name), None)
            if current is not None and current.pid is not None:
                print(f"chaos seed={self.seed} forced: {pod.name} still ran after its grace", flush=True)
                with contextlib.suppress(HarnessError):  # it ended in the meantime
                    self.cluster.kubelet.kill(pod.name, signal.SIGKILL)

        timer = threading.Timer(DRAIN_GRACE_SECONDS, force)
        timer.daemon = True
        timer.start()
