"""Helpers shared by the tests: one of each (waiting, processes), imported, never copied."""
