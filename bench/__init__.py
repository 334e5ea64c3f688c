"""hyperpool's benchmarks: ``python -m bench`` (or ``make bench``) writes docs/benchmarks.md.

Benchmarks are not tests: they measure on real RabbitMQ and Redis and report numbers against
goals (docs/benchmarks.md), they never assert timings. Each module says what it measures and why.
"""
