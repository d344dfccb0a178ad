"""The rules both the API and the worker apply, built on the stores and the runtime: the
crew registry, plans, whose data a key reaches (owners), what a submission must satisfy,
what a job's move leaves to do after commit, and the /health/debug report."""
