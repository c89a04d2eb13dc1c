"""Benchmarks (speed, memory, quality) against the reference stack; run each as `python -m bench.<name>`."""
