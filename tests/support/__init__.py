"""Helpers shared by the tests: the agent under test, fakes, the fault proxy, deadline waiters.

Test modules import from here; ``conftest.py`` files only define fixtures on top of it.
"""
