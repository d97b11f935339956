"""Benchmarks of sessionlib against raw redis-py and starsessions, measured side by side.

`python -m bench` runs them all (`--quick` for a smoke run) and writes bench/results/latest.json.
"""
