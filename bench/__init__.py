"""Benchmarks: the shared runtime's cost per command against a raw aio-pika echo (`make bench`).

Not part of the tests; see `bench.run` for what is measured and how.
"""
