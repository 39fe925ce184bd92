"""Load tests and benchmarks: ``make bench`` (``python -m bench.run``) and a locustfile.

Not part of the package and not run by CI's test step, except for the smoke run in
``tests/test_bench_smoke.py``.
"""
