"""The head-to-head benchmark: corso against restic and borg on the same data in the same run.

`python -m bench.run` (or `make bench` / `make bench-quick`) generates the dataset, runs every
available tool on every target, and writes bench/results.{md,json,png}.
"""
