"""Shared test configuration.

Hypothesis's per-example deadline is a timing assertion, and speed is measured in benchmarks,
not in tests: on a loaded 2-core CI machine a correct example can exceed it. Turned off for
every property test.
"""

from hypothesis import settings

settings.register_profile("kapell", deadline=None)
settings.load_profile("kapell")
