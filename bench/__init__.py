"""Benchmarks (`make bench`): three commands end to end against a raw aio-pika round trip, competing consumers, bulk
work, the reminder run and the notifier's mail throughput.

Not part of the tests; see `bench.run` for what is measured and how.
"""
