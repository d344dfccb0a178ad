"""A periodic supervised loop: do a step, sleep, again, until cancelled.

A step that meets a transient error (`shared.runtime.transient.is_transient`: Postgres or Redis away
for now) is handed to `on_transient`, to be logged, and the loop goes on: the next step may
succeed. Any other error is a bug, ends the loop with that error, and so the supervised task
running it, which stops the process (shared/runtime/supervisor.py). Cancellation stops it wherever
it is, in a step or asleep. Loops of another shape (the dispatcher's pump, which sleeps until
woken; the LISTEN connection of `shared.runtime.db.listen`) keep their own loop and the same
definition of transient.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn

from shared.runtime.transient import is_transient

Step = Callable[[], Awaitable[object]]
# Told each transient error a step met; it logs it, each loop with its own words and level.
OnTransient = Callable[[Exception], None]


async def skip_transient(step: Step, on_transient: OnTransient) -> bool:
    """Run `step` once: True if it succeeded, False if it met a transient error (handed to
    `on_transient`). Any other error is raised."""
    try:
        await step()
    except Exception as exc:
        if not is_transient(exc):
            raise
        on_transient(exc)
        return False
    return True


async def every(interval_s: float, step: Step, *, on_transient: OnTransient) -> NoReturn:
    """Run `step`, then sleep `interval_s`, until cancelled; a step's transient error goes to
    `on_transient` and the loop goes on, any other ends it."""
    while True:
        await skip_transient(step, on_transient)
        await asyncio.sleep(interval_s)
