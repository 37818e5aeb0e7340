"""pgmlops benchmarks, one module per part, run from the repository root: ``python -m bench.queue``."""
