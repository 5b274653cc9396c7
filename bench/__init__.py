"""Benchmarks: ``python -m bench``.  Figures are ratios measured in one run, never test assertions."""
