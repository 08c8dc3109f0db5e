"""The analysis's per-column thread pool: both phases over batches held in
memory, on one thread and on the pool, in one process.

Generates `--rows` rows x 10 heavy-tailed float32 columns (Student t, 2
degrees of freedom, 1% NaN) in batches of 65,536 rows, then runs the first
phase (`FirstPhaseCombineFn`) and the fit phase (`FitPhaseCombineFn`) over
them, alternating `TANHGUARD_THREADS=1` and the pool's default size,
`--repeat` times; prints the best wall and CPU seconds of each and the ratio.
No reading and no Beam: this isolates what the pool changes. The pool pays
only when the machine has a free core; the load average is printed before
and after.

    .venv/bin/python benchmarks/bench_threads.py --rows 3000000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# As the command line, before NumPy is imported: its AVX2 sorting kernels on
# AMD Zen 4 (`pipeline/simd.py`) and glibc keeping freed memory
# (`pipeline/malloc.py`).
from tanhguard.pipeline.malloc import keep_freed_memory
from tanhguard.pipeline.simd import prefer_avx2_sort

prefer_avx2_sort()
keep_freed_memory()

import numpy as np  # noqa: E402

BATCH = 65_536


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} {five:.1f} {fifteen:.1f}"


def _batches(rows: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    batches = []
    for start in range(0, rows, BATCH):
        x = rng.standard_t(2, (min(BATCH, rows - start), 10)).astype(np.float32)
        x[rng.random(x.shape) < 0.01] = np.nan
        batches.append(np.asfortranarray(x))  # column-major, as `dense_batch`
    return batches


def _phases(batches: list[np.ndarray]) -> tuple[float, float, float, float]:
    """Wall and CPU seconds of the first phase, then of the fit phase."""
    from tanhguard.transforms.config import parse_config
    from tanhguard.transforms.first_phase import FirstPhaseCombineFn
    from tanhguard.transforms.fit_phase import FitPhaseCombineFn
    from tanhguard.transforms.slots import plan_slots

    config = parse_config({"features": {f"f{i}": {} for i in range(10)}})
    first = FirstPhaseCombineFn(config)
    wall, cpu = time.perf_counter(), time.process_time()
    accumulator = first.create_accumulator()
    for x in batches:
        accumulator = first.add_input(accumulator, [x, np.isnan(x)])
    parameters = first.extract_output(accumulator)
    first_wall, first_cpu = time.perf_counter() - wall, time.process_time() - cpu
    slots = plan_slots(config)
    fit = FitPhaseCombineFn(slots, parameters, None, np.full(len(slots), 5.0))
    wall, cpu = time.perf_counter(), time.process_time()
    accumulator = fit.create_accumulator()
    for x in batches:
        accumulator = fit.add_input(accumulator, x)
    fit.extract_output(accumulator)
    return (
        first_wall,
        first_cpu,
        time.perf_counter() - wall,
        time.process_time() - cpu,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    from tanhguard.transforms.parallel import THREADS_ENV, thread_count

    os.environ.pop(THREADS_ENV, None)
    pool = thread_count()
    print(_load())
    batches = _batches(args.rows)
    best: dict[int, list[float]] = {}
    for _ in range(args.repeat):
        for threads in (1, pool):
            os.environ[THREADS_ENV] = str(threads)
            times = _phases(batches)
            previous = best.get(threads, [float("inf")] * 4)
            best[threads] = [min(a, b) for a, b in zip(previous, times, strict=True)]
    print(f"{args.rows:,} rows x 10 columns, best of {args.repeat}; seconds")
    print("threads  first wall  first CPU  fit wall  fit CPU")
    for threads, (fw, fc, sw, sc) in best.items():
        print(f"{threads:7d}  {fw:10.2f}  {fc:9.2f}  {sw:8.2f}  {sc:7.2f}")
    one, many = best[1], best[pool]
    print(
        f"one thread / {pool} threads (wall): first phase {one[0] / many[0]:.2f}x, "
        f"fit phase {one[2] / many[2]:.2f}x"
    )
    print(_load())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
