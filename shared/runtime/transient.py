"""What a transient error is: the one definition every supervised loop and retry uses.

A transient error means Postgres or Redis cannot be reached for now (refused, dropped,
timed out, restarting): worth logging and trying again, as the next pass may well succeed.
Anything else (a SQL error, a wrong type read from Redis, a bug) is not, and ends the task
that met it, so that its supervisor stops the process (shared/runtime/supervisor.py).

Each client keeps its own part, next to the client it is about:
`shared.runtime.db.is_connection_error` for Postgres, `shared.runtime.queue.REDIS_UNAVAILABLE`
for Redis; this module is their union, for code that talks to both or to either. An LLM
provider's errors are another matter, retried by the crew's own layer
(`worker/crew/errors.py`).
"""

from shared.runtime.db import is_connection_error
from shared.runtime.queue import REDIS_UNAVAILABLE


def is_transient(exc: BaseException) -> bool:
    """Postgres or Redis unreachable for now: log it and try again later."""
    return is_connection_error(exc) or isinstance(exc, REDIS_UNAVAILABLE)
