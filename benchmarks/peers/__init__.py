"""The peers of the fan-out benchmark (``benchmarks/fanout.py``)."""
