"""Benchmarks: `make bench` runs each module here that is not a helper (see bench/run.py)."""
