"""Imported before CrewAI, wherever CrewAI is (crew processes, tests that build crews): it
must not reach the network on its own (telemetry, tracing, its version check; LiteLLM, its
fallback for models without a native provider, would fetch a price list at import). A
deployment may still opt back in by setting these variables itself."""

import os

for _name, _value in (
    ("CREWAI_DISABLE_TELEMETRY", "true"),
    ("CREWAI_TRACING_ENABLED", "false"),
    ("CREWAI_DISABLE_VERSION_CHECK", "true"),
    ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
):
    os.environ.setdefault(_name, _value)
