"""``python -m athena.bench [--quick] [--out DIR] …``: the same command as ``athena bench``.

The guard matters: the worker pool starts its processes with ``spawn``, which imports
this module again in every worker.
"""

from athena.interfaces.cli_bench import bench_app
from athena.large_pages import relaunch_on_large_pages

if __name__ == "__main__":
    relaunch_on_large_pages()  # as `athena bench` does: the heap on huge pages
    bench_app(prog_name="python -m athena.bench")
