"""Where training time goes: env stepping, policy inference, data handling, learning, and Lightning itself.

The algorithms mark the boundaries of their sections with :meth:`IterationTimer.add`, which costs one
``time.perf_counter()`` call and a float addition (no device synchronisation: on a GPU the time of a queued
kernel is charged to whichever section waits for it). :meth:`RLModule.log_metrics
<lightrl.algos.base.RLModule.log_metrics>` logs each section as a fraction of the wall time since the
previous log, plus the rest, which is time spent outside lightrl's code: Lightning's loop, hooks, logging,
progress bar and dataloader machinery.
"""

from __future__ import annotations

import time

#: The measured sections, logged as ``time/<section>``.
SECTIONS = ("env_step", "inference", "data", "learn")


class IterationTimer:
    """Seconds spent in each section since the last :meth:`metrics` call.

    Sections must not nest: each :meth:`add` charges the time since the previous boundary to one section.

    Args:
        enabled: With ``False`` every call is a no-op (no clock is read) and no metrics are produced.

    Example::

        t = timer.start()
        action = policy(obs)
        t = timer.add("inference", t)
        step = envs.step(action)
        t = timer.add("env_step", t)
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.totals = dict.fromkeys(SECTIONS, 0.0)
        self.window_start: float | None = None
        self.iterations = 0

    def start(self) -> float:
        """The current time, to pass to the first :meth:`add` of a run of sections."""
        return time.perf_counter() if self.enabled else 0.0

    def add(self, section: str, since: float) -> float:
        """Charge the time since ``since`` to ``section``; return the current time (the next section's start)."""
        if not self.enabled:
            return 0.0
        now = time.perf_counter()
        self.totals[section] += now - since
        return now

    def reset(self) -> None:
        """Start a new window now: the totals go back to zero."""
        self.totals = dict.fromkeys(SECTIONS, 0.0)
        self.window_start = time.perf_counter() if self.enabled else None
        self.iterations = 0

    def step(self) -> None:
        """Count one training iteration (a ``training_step``) in the current window."""
        self.iterations += 1

    def metrics(self) -> dict[str, float]:
        """Each section's share of the wall time since the window started, then a new window.

        Returns ``time/<section>`` for every section, ``time/lightning_overhead`` (the rest of the wall time)
        and ``time/iteration`` (wall seconds per training iteration). Empty when disabled, before the first
        window, or when no section was timed (an algorithm that does not mark its sections).
        """
        if not self.enabled or self.window_start is None or not any(self.totals.values()):
            self.reset()
            return {}
        wall = max(time.perf_counter() - self.window_start, 1e-12)
        metrics = {f"time/{name}": seconds / wall for name, seconds in self.totals.items()}
        metrics["time/lightning_overhead"] = max(wall - sum(self.totals.values()), 0.0) / wall
        metrics["time/iteration"] = wall / max(self.iterations, 1)
        self.reset()
        return metrics
