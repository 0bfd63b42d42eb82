"""Run one movierec command in this (fresh) process and write where its time went.

    python benchmarks/_phases.py OUT.json LAUNCHED_AT -- movierec-arguments...

LAUNCHED_AT is the parent's time.time() just before it started this process, so the
start-up phase (interpreter, imports of the CLI) is measured from the launch. Each stage's
runner, the model fit, the metrics, and the artifact writes inside the stages are timed by
wrapping them; what is left (config, the lock, reading the tables, ranking set-up, the report) is "other".
The wrapper imports the pipeline and evaluation modules before the command starts (to wrap
them), so their imports count in the start-up phase.
Used by benchmarks/command_speed.py for its per-phase breakdown.
"""

import json
import sys
import time

entered = time.time()
out_path, launched = sys.argv[1], float(sys.argv[2])
argv = sys.argv[sys.argv.index("--") + 1:]

from movierec import pipeline  # noqa: E402
from movierec.catalog import Catalog  # noqa: E402
from movierec.cli import _end, main  # noqa: E402
from movierec.evaluation import evaluate as ev  # noqa: E402

spent: dict[str, float] = {}


def timed(name, fn):
    def run(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
    return run


for name, stage in list(pipeline.STAGE.items()):
    if name != "train":
        pipeline.STAGE[name] = stage._replace(run=timed(name, stage.run))
Catalog.write = timed("artifact writes (inside the stages)", Catalog.write)
Catalog.write_manifest = timed("artifact writes (inside the stages)", Catalog.write_manifest)
ev.measure_users = timed("metrics", ev.measure_users)
ev._uncertainty = timed("metrics", ev._uncertainty)
started = time.time()


def fit_timer():
    from movierec.models.mf import MatrixFactorization

    MatrixFactorization.fit = timed("fit (incl. loading the compiled kernels)", MatrixFactorization.fit)


fit_timer()
t0 = time.perf_counter()
code = 0
try:
    main(argv)
except SystemExit as exc:
    code = exc.code or 0
total_main = time.perf_counter() - t0
spent["start-up and imports (interpreter, CLI, pandas, scipy, the pipeline)"] = started - launched
inner = sum(v for k, v in spent.items() if not k.startswith(("start-up", "artifact writes")))
spent["other (config, lock, reading tables, report)"] = total_main - inner
with open(out_path, "w") as fh:
    json.dump(spent, fh)
_end(code)  # as the console command ends (no interpreter teardown)
