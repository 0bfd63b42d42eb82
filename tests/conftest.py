"""Shared fixtures: small generated data sets, configs, and a CLI runner (in this process, or a
subprocess where a command needs its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from movierec.data.synthetic import demo_tables

ROOT = Path(__file__).resolve().parents[1]

# the sentiment encoder's ONNX export goes to a folder of this test session (inherited by the
# CLI subprocesses), never to the user's ~/.cache; set MOVIEREC_CACHE_DIR to reuse one
os.environ.setdefault("MOVIEREC_CACHE_DIR", tempfile.mkdtemp(prefix="movierec-test-cache-"))
# nothing in the tests downloads; set once for the session (the hub library reads it at import,
# and the CLI's commands run in this process)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_data(folder: Path, n_users: int = 300, n_movies: int = 150, seed: int = 1,
              files: tuple[str, ...] = ("ratings", "users", "movies", "reviews", "social")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in demo_tables(n_users, n_movies, seed).items():
        if name in files:
            df.to_csv(folder / f"{name}.csv", index=False)
    return folder


def write_config(path: Path, data_dir: Path, workdir: Path, **sections) -> Path:
    cfg = {
        "workdir": str(workdir),
        "data": {"dir": str(data_dir)},
        "split": {"method": "random", "test_fraction": 0.2, "seed": 0},
        "sentiment": {"enabled": False},
        "model": {"factors": 16, "epochs": 20, "seed": 0},
        "evaluate": {"k": [10], "baselines": ["global_mean", "popularity", "bias"]},
    }
    for k, v in sections.items():
        if isinstance(v, dict):
            cfg.setdefault(k, {}).update(v)
        else:
            cfg[k] = v
    path.write_text(yaml.safe_dump(cfg))
    return path


def clone_site(cfg_path: Path, dst: Path) -> tuple[Path, Path, Path]:
    """A copy of a trained site (its data folder and workdir) with its config pointing at the
    copy: a test that changes data or models starts from a trained state in a second, not a
    fresh training run. Returns (config, data folder, workdir)."""
    import shutil

    cfg = yaml.safe_load(Path(cfg_path).read_text())
    dst.mkdir(parents=True, exist_ok=True)
    data, work = dst / "data", dst / "work"
    shutil.copytree(cfg["data"]["dir"], data)
    shutil.copytree(cfg["workdir"], work, ignore=shutil.ignore_patterns("lock"), symlinks=True)
    cfg["data"]["dir"], cfg["workdir"] = str(data), str(work)
    out = dst / "c.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out, data, work


def call(*args: str) -> int:
    """Run ``movierec ARGS`` in this process; returns the exit code."""
    from movierec.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def run_cli(*args: str, input: str | None = None, env: dict | None = None, timeout: float = 600,
            fresh: bool = False) -> subprocess.CompletedProcess:
    """Run ``movierec ARGS``; returns the CompletedProcess (text).

    In this process (:func:`run_in_process`: the command's libraries and compiled kernels are
    loaded once per test worker, not once per command, which took a third of the suite's time)
    unless it needs a process of its own (:func:`needs_fresh_process`, or ``fresh``): then as
    ``python -m movierec ARGS``, the way a user runs it."""
    if fresh or input is not None or needs_fresh_process(args, env):
        return subprocess.run([sys.executable, "-m", "movierec", *args], capture_output=True, text=True,
                              input=input, env={**os.environ, **(env or {})}, timeout=timeout)
    return run_in_process(*args, env=env)


def needs_fresh_process(args, env: dict | None) -> bool:
    """A command that kills itself (a failpoint), runs on Ray (whose driver state is per process),
    serves, writes to the process's own file descriptors (``/dev/stdout``) or changes what a
    library reads once at import (Ray's and the Hugging Face hub's variables) runs in a process
    of its own."""
    if any(k == "MOVIEREC_FAILPOINT" or k.startswith(("RAY_", "HF_")) for k in (env or {})):
        return True
    return "serve" in args or any(a.startswith(("engine.", "/dev/")) for a in args)


def run_in_process(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``movierec ARGS`` through :func:`movierec.cli.main` in this process, with its own
    environment variables, standard streams (pipes to it, not terminals: no progress bars, as
    under a subprocess) and logging, all put back afterwards; stdout and stderr captured."""
    import io
    import logging

    from movierec import progress

    added = dict(env or {})
    saved_env = {k: os.environ.get(k) for k in added}
    root = logging.getLogger()
    bars = progress.BARS  # --log-format json turns bars off for the process
    saved_log = (list(root.handlers), root.level,
                 {n: lg.level for n, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)})

    class Kept(io.BytesIO):  # what was written stays readable after its wrapper is closed or collected
        def close(self) -> None:
            pass

    streams = (sys.stdin, sys.stdout, sys.stderr)
    out, err = Kept(), Kept()
    sys.stdin = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True)
    os.environ.update(added)
    try:
        code = call(*args)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except ValueError:  # closed by the command
                pass
        sys.stdin, sys.stdout, sys.stderr = streams
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        progress.BARS = bars
        root.handlers[:], _, levels = saved_log
        root.setLevel(saved_log[1])
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    return subprocess.CompletedProcess(["movierec", *args], code, out.getvalue().decode("utf-8", "replace"),
                                       err.getvalue().decode("utf-8", "replace"))


#: what a light command must not import
HEAVY = ("tensorflow", "torch", "transformers", "onnxruntime", "ray")


def check_imports(*modules: str) -> str:
    """``python -c check_imports(M...) ARGS`` runs ``movierec ARGS`` as the console command
    does and prints ``HEAVY=`` and which of ``modules`` it imported, last on stderr (from an
    atexit handler: the command ends the process itself once they have run)."""
    return (
        "import atexit, runpy, sys\n"
        f"WATCH = {modules!r}\n"
        "def report():\n"
        "    found = sorted(m for m in WATCH if m in sys.modules)\n"
        "    print('HEAVY=' + ','.join(found), file=sys.stderr, flush=True)\n"
        "atexit.register(report)\n"
        "sys.argv = ['movierec'] + sys.argv[1:]\n"
        "runpy.run_module('movierec', run_name='__main__')\n"
    )


#: ``python -c CHECK_HEAVY ARGS`` runs ``movierec ARGS`` and prints which heavy modules it imported
CHECK_HEAVY = check_imports(*HEAVY)


def tree_snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "lock"}


@pytest.fixture
def small_data(tmp_path: Path) -> Path:
    return make_data(tmp_path / "data")


def built_once(tmp_path_factory, name: str, build, copy: str | None = "work") -> tuple[Path, Path | None]:
    """A folder ``build(folder)`` makes once per test session, even across pytest-xdist's
    workers (the first to ask builds it under a lock in the session's shared temporary
    folder; the others wait for it). Returns (the shared folder, the asking worker's own copy
    of its ``copy`` subfolder, which its tests may change). A failed build fails every test
    that asks."""
    import fcntl
    import shutil

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    done, folder = shared / f"{name}.built", shared / f"{name}.shared"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            if folder.exists():  # a build that failed in another worker: try again here
                shutil.rmtree(folder)
            build(folder)
            done.write_text("ok")
    if copy is None:
        return folder, None
    own = tmp_path_factory.mktemp(name) / copy
    shutil.copytree(folder / copy, own, symlinks=True, ignore=shutil.ignore_patterns("lock"))
    return folder, own


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory) -> str:
    """``engine.address`` of one local Ray head (4 CPUs) that the session's Ray commands
    connect to, instead of each starting and stopping a Ray of its own (about 5 s a command;
    a command with the address unset still does: tests/e2e/test_ray_ops.py). Started once
    across xdist's workers; stopped when the session ends (:func:`pytest_sessionfinish`)."""
    pytest.importorskip("ray")

    def build(folder: Path) -> None:
        folder.mkdir(parents=True)
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["RAY_AUTH_MODE"] = "disabled"  # a head started by `ray start` asks for a token otherwise
        ray_cli = Path(sys.executable).with_name("ray")
        with open(folder / "start.log", "w") as out:
            # its own process group: the whole head is stopped with one signal, and nothing else
            proc = subprocess.Popen([str(ray_cli), "start", "--head", "--num-cpus=4", f"--port={port}",
                                     "--node-ip-address=127.0.0.1", f"--ray-client-server-port={_free_port()}",
                                     "--include-dashboard=false", "--disable-usage-stats"],
                                    stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            (folder / "pgid").write_text(str(proc.pid))  # first: a start that hangs is stopped too
            rc = proc.wait(timeout=180)
        assert rc == 0, (folder / "start.log").read_text()[-3000:]
        (folder / "address").write_text(f"127.0.0.1:{port}")

    folder, _ = built_once(tmp_path_factory, "rayhead", build, copy=None)
    return (folder / "address").read_text()


@pytest.fixture(scope="session")
def ray_opts(ray_head) -> tuple[str, ...]:
    """The overrides of a command on the Ray engine: 2 workers on the shared local head."""
    return ("engine.kind=ray", "engine.workers=2", f"engine.address={ray_head}")


#: the slowest test files (seconds of a 2-core run, whole file), handed to xdist's workers
#: first so that neither is left alone with a long one at the end (addopts:
#: --no-loadscope-reorder keeps this order); the rest follow in collection order
SLOW_FILES = ("e2e/test_refresh.py", "e2e/test_demo.py", "e2e/test_ray_engine.py", "e2e/test_ray_train.py",
              "e2e/test_cli_small.py", "e2e/test_registry.py", "e2e/test_hardening.py", "e2e/test_multilingual.py",
              "e2e/test_serve.py", "e2e/test_privacy.py", "e2e/test_ray_ops.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: k for k, name in enumerate(SLOW_FILES)}

    def key(item) -> int:
        path = item.nodeid.split("::", 1)[0].removeprefix("tests/")
        return rank.get(path, len(SLOW_FILES))

    items.sort(key=key)  # stable: a file's tests keep their order


#: compiles numba's kernels in one process: a tiny evaluate in each trainer layout (plain,
#: implicit, features and trust, EASE) and the top-n kernel of large blocks
_WARM_KERNELS = """
import sys, tempfile
from pathlib import Path
import numpy as np
from tests.conftest import call, make_data, write_config
from movierec._topk import topk_rows
topk_rows(np.random.default_rng(0).random((2, 300_000), dtype=np.float32), 10)
base = Path(tempfile.mkdtemp(prefix="movierec-warm-"))
cfg = write_config(base / "c.yaml", make_data(base / "data"), base / "work")
for extra in ([], ["model.implicit=true"], ["model.use_features=false", "social.enabled=false"], ["model.ranking=ease"]):
    assert call("-q", "evaluate", "--config", str(cfg), "evaluate.baselines=[]", *extra) == 0
"""


def pytest_sessionstart(session) -> None:
    """A fresh checkout has no compiled kernels: numba compiles each on first use and caches
    it beside its source, and the CLI subprocesses of both xdist workers would compile the same
    kernels at once (a clean clone's pytest took 7:24, 6:35 with this, 5:43 with the cache warm). Compile
    them once here, in the controller before xdist starts its workers (its hook runs last)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    cached = {p.name.split("-")[0] for p in (ROOT / "src" / "movierec").rglob("*.nbi")}
    cached |= {p.name.split("-")[0] for p in (ROOT / "src" / "movierec").rglob("*.lean.o")}  # movierec._lean
    if {"_sgd_c.epoch_by_user", "_sgd.sgd_epoch_grouped", "_sgd.sgd_epoch_shuffled", "_sgd.bpr_epoch",
            "_topk.topk_rows"} <= cached:
        return
    try:  # a failure here is the tests' to report, where the kernels are used
        subprocess.run([sys.executable, "-c", _WARM_KERNELS], cwd=ROOT, capture_output=True, timeout=600)
    except subprocess.TimeoutExpired:
        pass


def pytest_sessionfinish(session) -> None:
    """Stop the shared Ray head (in the process that ran the session: xdist's controller once
    its workers are done, or the only process)."""
    import signal

    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or factory._basetemp is None:
        return
    pgid = factory._basetemp / "rayhead.shared" / "pgid"
    if pgid.exists():
        try:
            os.killpg(int(pgid.read_text()), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError):
            pass


@pytest.fixture(scope="session")
def trained_small(tmp_path_factory):
    """A small data set with a trained model (sentiment off: fast)."""

    def build(folder: Path) -> None:
        data = make_data(folder / "data")
        cfg = write_config(folder / "config.yaml", data, folder / "work")
        r = run_cli("train", "--config", str(cfg))
        assert r.returncode == 0, r.stderr

    shared, work = built_once(tmp_path_factory, "small", build)
    # the data is read only (shared); the workdir is this worker's
    return write_config(work.parent / "config.yaml", shared / "data", work)


@pytest.fixture(scope="session")
def demo_workdir(tmp_path_factory):
    """configs/default.yaml trained end to end on the shipped demo data (every stage)."""

    def build(folder: Path) -> None:
        r = run_cli("train", "--config", str(ROOT / "configs" / "default.yaml"), f"workdir={folder / 'work'}")
        assert r.returncode == 0, r.stderr

    return built_once(tmp_path_factory, "demo", build)[1]


def read_json(text: str) -> dict:
    return json.loads(text)


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def tiny_classifier(folder: Path, id2label: dict | None = None, bias=(-4.0, 4.0)) -> Path:
    """A tiny BERT sequence classifier saved locally (fast stand-in for a hub model)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    id2label = id2label or {0: "NEGATIVE", 1: "POSITIVE"}
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "a", "the"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64, num_labels=len(id2label),
                     id2label=id2label, label2id={v: k for k, v in id2label.items()})
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(folder)
    return folder
