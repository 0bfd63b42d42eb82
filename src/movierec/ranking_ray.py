"""``recommend --all`` on Ray (``engine.kind: ray``): user blocks mapped over workers, the
plan (:class:`movierec.ranking.AllLists`) shared through the object store, one Parquet part
file per block.

The Ray session is :func:`movierec.engine.session`; ray itself is imported only inside it
(``pip install 'movierec[ray]'``).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np

from movierec.config import EngineConfig
from movierec.engine import session
from movierec.errors import ConfigError
from movierec.progress import Progress
from movierec.ranking import lists_for_users


def recommend_all_ray(plan, n: int, out_dir: str | Path, engine: EngineConfig, block: int = 20000) -> int:
    """Every user's list on Ray: ``plan`` (:class:`movierec.ranking.AllLists`) put once in
    the object store, user blocks mapped over tasks, one Parquet part file per block in
    ``out_dir`` (replaced as a whole: a reader never sees half of a new folder). Returns the
    number of rows written."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--output {out_dir}: with engine.kind: ray, --all writes a folder of Parquet part "
                          "files; that path is a file")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    n_users = plan.n_users
    block = max(1, min(block, int(np.ceil(n_users / (engine.workers * 4)))))
    try:
        with session(engine) as ray:
            @ray.remote(num_cpus=engine.cpus_per_worker)
            def run_block(plan, start: int, stop: int, path: str) -> int:
                df = lists_for_users(plan, np.arange(start, stop), n)
                df.to_parquet(path, index=False)
                return len(df)

            ref = ray.put(plan)
            tasks = [run_block.remote(ref, s, min(s + block, n_users), str(tmp / f"part-{k:05d}.parquet"))
                     for k, s in enumerate(range(0, n_users, block))]
            rows = 0
            with Progress(len(tasks), "recommend on Ray", unit="block") as bar:
                pending = list(tasks)
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    rows += int(ray.get(done[0]))
                    bar.update(1)
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows
