"""Run every benchmark: `python -m benchmarks [name ...]`."""

import sys

from benchmarks import bench_ve

BENCHMARKS = {"ve": bench_ve.main}

if __name__ == "__main__":
    names = sys.argv[1:] or list(BENCHMARKS)
    for name in names:
        BENCHMARKS[name]()
