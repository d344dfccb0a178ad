"""Wire formats: the pydantic models of API bodies, webhook events and job states.

This package imports nothing else from crewq, so clients can depend on it alone.
"""
