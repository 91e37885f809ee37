"""Helpers the tests import: processes, clients, factories and read helpers.

Plain functions, classes and constants live here, one job per module; pytest fixtures stay in
conftest.py modules, except those several test directories share, in ``tests.support.fixtures``.
"""
