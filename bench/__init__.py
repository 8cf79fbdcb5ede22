"""respawn's benchmarks: figures printed as ratios against a baseline measured in the same run.

Not tests: nothing here asserts a speed. `python bench/run.py` (or `make bench`) runs them;
docs/BENCHMARKS.md explains each and records a run.
"""
