"""The execution-strategy benchmark harness (``athena bench``).

:mod:`workloads` builds the stores and query streams, :mod:`arms` runs operations over the
arms interleaved, :mod:`scenarios` the latency scenarios, :mod:`loadgen` the open-loop
concurrency and throughput phases, :mod:`oracle` the regret against a per-query oracle,
:mod:`report`, :mod:`goals` and :mod:`plots` the outputs, :mod:`runner` the whole run.
"""
