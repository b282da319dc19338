"""``python -m athena.bench [--quick] [--out DIR] …``: the same command as ``athena bench``.

The guard matters: the worker pool starts its processes with ``spawn``, which imports
this module again in every worker.
"""

from athena.interfaces.cli_bench import bench_app

if __name__ == "__main__":
    bench_app(prog_name="python -m athena.bench")
