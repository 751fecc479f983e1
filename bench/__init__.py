"""Benchmarks: `make bench` (python -m bench) writes docs/benchmarks.md.

Every figure is measured beside a baseline in the same run and reported as a ratio, with
min/median/max over repeated runs: the machines are shared and noisy, ratios travel better.
"""
