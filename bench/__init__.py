"""Benchmarks of torchgmm against its peers (run with ``python -m bench``)."""
