"""The session domain: models, rules, clock, errors and the manager facade.

Pure: it imports only the standard library, pydantic and sortedcontainers (tests/arch holds
that), so it runs the same under any web framework, exporter or store.
"""
