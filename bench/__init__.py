"""Benchmarks: each module prints `name: value` figures and ratios against a baseline measured in the
same run (`python -m bench.run`); the figures the README quotes come from `bench/results/`.
"""
