"""The crew process: a warm child of a forkserver that imported CrewAI (pool, process),
the messages it exchanges with its worker (protocol), how it builds a crew and binds
crewq's LLM, retries and step events to it (builder, llm, llm_retry, events, tls), and the
folders CrewAI must be able to write (dirs)."""
