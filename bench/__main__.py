import os

# Thread counts must be fixed before NumPy, SciPy or torch load their thread pools
# (worker processes inherit them).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, os.environ.get("BENCH_THREADS", "2"))

from bench.run import main  # noqa: E402

raise SystemExit(main())
