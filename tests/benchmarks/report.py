"""The one table the runner prints: figure, measured, target, baseline/ratio, pass/fail."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    figure: str
    measured: str
    target: str
    baseline: str
    ok: bool | None  # None: informational, no target

    @property
    def verdict(self) -> str:
        return "info" if self.ok is None else ("pass" if self.ok else "FAIL")


@dataclass(frozen=True)
class Sizes:
    """How big and how often: the full run, or ``--quick`` for CI."""

    quick: bool
    runs: int  # timed runs per command (medians of these)
    store: int  # "10,000 jobs already stored"
    scaling: tuple[int, ...]
    scaling_runs: int
    staggered: int  # jobs due at staggered times
    stagger: float  # seconds between their due times (plus jitter)
    burst: int  # jobs due at one moment
    burst_reps: int  # interleaved repetitions of (parallel, one-at-a-time)
    delayed: int  # jobs of the burst with RunInstances held like EC2 would
    callbacks: int
    clients: int
    idle_seconds: float

    @classmethod
    def make(cls, quick: bool) -> "Sizes":
        if quick:
            return cls(True, runs=5, store=10_000, scaling=(1_000, 10_000), scaling_runs=3, staggered=30,
                       stagger=0.25, burst=100, burst_reps=1, delayed=40, callbacks=300, clients=50, idle_seconds=10.0)
        return cls(False, runs=15, store=10_000, scaling=(1_000, 10_000, 50_000), scaling_runs=7, staggered=100,
                   stagger=0.3, burst=500, burst_reps=2, delayed=100, callbacks=1_000, clients=50, idle_seconds=60.0)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(rows: list[Row]) -> str:
    """A Markdown table (readable in a terminal, pasted as is into BENCHMARKS.md)."""
    head = ("figure", "measured", "target", "baseline / ratio", "result")
    body = [(r.figure, r.measured, r.target, r.baseline, r.verdict) for r in rows]
    widths = [max(len(_cell(line[i])) for line in [head, *body]) for i in range(len(head))]

    def fmt(line: tuple[str, ...]) -> str:
        return "| " + " | ".join(_cell(c).ljust(w) for c, w in zip(line, widths)) + " |"

    return "\n".join([fmt(head), "| " + " | ".join("-" * w for w in widths) + " |", *map(fmt, body)])
