"""crewq's version, as installed."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("crewq")
except PackageNotFoundError:  # running from a bare source tree
    VERSION = "0.0.0"

USER_AGENT = f"crewq/{VERSION}"
