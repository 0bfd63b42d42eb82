"""What a cluster operator meets with engine.kind: ray (docs/ray.md#operations): an address
that does not answer fails fast (exit 78), a cluster too small for the workers is refused
before any work (78), a cluster lost during the run exits 69 (Ctrl-C: 130), and with the
address unset a command starts a Ray of its own even where another one runs.

Most checks drive :func:`movierec.engine.session` with a stand-in for the ray module (no Ray
is started); one command starts a local Ray beside the test session's Ray head (conftest.py)."""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import call, make_data, run_cli, write_config

ray = pytest.importorskip("ray")

import ray.exceptions as rex  # noqa: E402

from movierec import engine as eng  # noqa: E402
from movierec.config import EngineConfig  # noqa: E402
from movierec.errors import EXIT_CONFIG, EXIT_UNAVAILABLE, ClusterError, ConfigError  # noqa: E402

WAIT_ENV = "RAY_gcs_server_port_wait_time_s"


def _site(tmp_path: Path, **engine) -> Path:
    """A config whose ratings are a folder of part files: `movierec ingest` opens the Ray
    session first thing (the cheapest command that does)."""
    src = make_data(tmp_path / "src", n_users=60, n_movies=40, files=("ratings",))
    parts = tmp_path / "d" / "ratings"
    parts.mkdir(parents=True)
    (src / "ratings.csv").rename(parts / "part-0.csv")
    return write_config(tmp_path / "c.yaml", tmp_path / "d", tmp_path / "w", data={"ratings": "ratings"},
                        engine={"kind": "ray", **engine})


class FakeRay:
    """The part of the ray module that :func:`movierec.engine.session` uses; records calls."""

    __version__ = "fake"
    LoggingConfig = ray.LoggingConfig

    def __init__(self, resources: dict):
        self.resources, self.inits, self.shutdowns, self.connected = resources, [], 0, False
        self.wait_env = "unread"

    def is_initialized(self) -> bool:
        return self.connected

    def init(self, **kwargs) -> None:
        self.inits.append(kwargs)
        self.wait_env = os.environ.get(WAIT_ENV)
        self.connected = True

    def cluster_resources(self) -> dict:
        return dict(self.resources)

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.connected = False

    #: raised by a task's submission (``remote``), as Ray raises a lost cluster or Ctrl-C there
    task_error: BaseException | None = None

    def remote(self, **options):
        """``ray.remote(...)(fn)``: a task that runs in this process (or raises ``task_error``)."""
        fake = self

        class Task:
            def __init__(self, fn):
                self.fn = fn

            def remote(self, *args):
                if fake.task_error is not None:
                    raise fake.task_error
                return self.fn(*args)

        return Task

    def get(self, ref):
        return ref

    def cancel(self, ref) -> None:
        pass


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.delenv(WAIT_ENV, raising=False)
    f = FakeRay({"CPU": 2.0, "memory": 1e9})
    monkeypatch.setattr(eng, "import_ray", lambda: f)
    return f


# ----------------------------------------------------------------------------- unreachable address
@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_an_unreachable_address_exits_78_within_the_connect_timeout(tmp_path, address):
    c = _site(tmp_path, address=address, connect_timeout=5)
    t0 = time.monotonic()
    r = run_cli("ingest", "--config", str(c), timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == EXIT_CONFIG, r.stderr[-3000:]
    assert f"engine.address '{address}': cannot reach 127.0.0.1:1 within 5s: connection refused" in r.stderr
    assert took < 5 + 20, took
    assert not (tmp_path / "w" / "artifacts" / "ratings_raw.parquet").exists()


def test_a_port_that_does_not_answer_times_out_with_the_address_named(monkeypatch):
    seen = {}

    def silent(addr, timeout):
        seen["addr"], seen["timeout"] = addr, timeout
        raise socket.timeout("timed out")

    monkeypatch.setattr(eng.socket, "create_connection", silent)
    with pytest.raises(ConfigError) as err:
        eng.probe("ray://10.0.0.9:10001", 7.5)
    assert seen == {"addr": ("10.0.0.9", 10001), "timeout": 7.5}
    assert str(err.value) == "engine.address 'ray://10.0.0.9:10001': cannot reach 10.0.0.9:10001 within 7.5s: timed out"
    assert err.value.exit_code == EXIT_CONFIG


def test_host_port_of_each_address_form():
    assert eng.host_port("10.0.0.9:6379") == ("10.0.0.9", 6379)
    assert eng.host_port("ray://head-svc:10001") == ("head-svc", 10001)
    assert eng.host_port("[::1]:6379") == ("::1", 6379)
    assert eng.host_port("auto") is None and eng.host_port("ray://head-svc") is None  # Ray resolves those


def test_a_failed_connect_names_the_cause_ray_chains_beneath():
    inner = RuntimeError("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
                         "  File x\nray.exceptions.AuthenticationError: Authentication token is missing\n")
    try:
        try:
            raise inner
        except RuntimeError as e:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.9:6379") from e
    except ConnectionError as outer:
        assert eng._reason(outer) == ("Failed to connect to Ray cluster at 10.0.0.9:6379 (Failed to connect to "
                                      "GCS. Last connection error: ray.exceptions.AuthenticationError: "
                                      "Authentication token is missing)")
    assert eng._reason(ConnectionError("plain")) == "plain"


def test_auto_without_a_cluster_is_a_config_error_naming_the_address(fake, monkeypatch):
    def none_running(**kwargs):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.")

    monkeypatch.setattr(fake, "init", none_running)
    with pytest.raises(ConfigError) as err:
        with eng.session(EngineConfig(kind="ray", address="auto")):
            pass
    assert str(err.value).startswith("engine.address 'auto': cannot connect to Ray: Could not find any running "
                                     "Ray instance")
    assert "leave engine.address unset for a local Ray" in str(err.value) and err.value.exit_code == 78


def test_connect_timeout_is_a_positive_number():
    from movierec.config import load_config

    assert load_config(None).engine.connect_timeout == 30
    assert load_config(None, ["engine.connect_timeout=2.5"]).engine.connect_timeout == 2.5
    with pytest.raises(ConfigError, match="engine.connect_timeout"):
        load_config(None, ["engine.connect_timeout=0"])


def test_ray_retries_the_gcs_for_about_connect_timeout_not_minutes(fake):
    """After the TCP probe, ray.init's GCS attempts (up to ~40 s each, 20 by default) are capped
    through RAY_gcs_server_port_wait_time_s for that call only."""
    with eng.session(EngineConfig(kind="ray", address="auto")):
        pass
    assert fake.wait_env == "1" and WAIT_ENV not in os.environ
    with eng.session(EngineConfig(kind="ray", address="auto", connect_timeout=300)):
        pass
    assert fake.wait_env == "8"
    with eng.session(EngineConfig(kind="ray")):  # a local start waits as Ray sees fit
        pass
    assert fake.wait_env is None


# ----------------------------------------------------------------------------- resources
def test_check_resources_names_both_numbers_and_the_cluster():
    with pytest.raises(ConfigError) as err:
        eng.check_resources(EngineConfig(kind="ray", workers=8), {"CPU": 2.0}, "auto")
    assert str(err.value) == ("engine.workers 8 x cpus_per_worker 1 = 8 CPUs, but the cluster at auto has 2: "
                              "lower engine.workers or add nodes")
    with pytest.raises(ConfigError, match=r"engine.workers 2 x gpus_per_worker 0.5 = 1 GPUs, but the cluster "
                                          r"at ray://h:10001 has 0"):
        eng.check_resources(EngineConfig(kind="ray", workers=2, gpus_per_worker=0.5), {"CPU": 64.0},
                            "ray://h:10001")
    # what fits passes: exactly enough, fractional CPUs, no GPUs asked
    eng.check_resources(EngineConfig(kind="ray", workers=4, cpus_per_worker=0.5), {"CPU": 2.0}, "auto")
    eng.check_resources(EngineConfig(kind="ray", workers=2, gpus_per_worker=1), {"CPU": 2.0, "GPU": 2.0}, "auto")


def test_a_cluster_too_small_is_refused_on_connect_and_disconnected(fake):
    with pytest.raises(ConfigError, match="engine.workers 8 x cpus_per_worker 1 = 8 CPUs, but the cluster at auto "
                                          "has 2: lower engine.workers"):
        with eng.session(EngineConfig(kind="ray", address="auto", workers=8)):
            pytest.fail("the block must not run")
    assert fake.inits[0]["address"] == "auto" and "num_cpus" not in fake.inits[0]
    assert fake.shutdowns == 1 and not fake.connected
    # inside a hold too (the hold has nothing left to shut down)
    with pytest.raises(ConfigError):
        with eng.hold():
            with eng.session(EngineConfig(kind="ray", address="auto", workers=8)):
                pass
    assert fake.shutdowns == 2


def test_the_local_ray_is_the_commands_own_and_not_checked(fake, caplog):
    caplog.set_level(logging.INFO, logger="movierec")
    with eng.session(EngineConfig(kind="ray", workers=8)):  # its own Ray has the CPUs it is given
        pass
    kw = fake.inits[0]
    assert kw["address"] == "local" and kw["num_cpus"] >= 9 and fake.shutdowns == 1
    # Ray's worker logs reach stderr only at -v (DEBUG)
    assert kw["log_to_driver"] is False
    caplog.set_level(logging.DEBUG, logger="movierec")
    with eng.session(EngineConfig(kind="ray")):
        pass
    assert fake.inits[1]["log_to_driver"] is True


# ----------------------------------------------------------------------------- lost cluster
@pytest.mark.parametrize("exc", [rex.NodeDiedError("node 8f3 died: raylet heartbeat missed"),
                                 rex.RaySystemError("GCS went away"), rex.LocalRayletDiedError(),
                                 rex.ActorDiedError(), ConnectionError("GCS is unavailable")],
                         ids=lambda e: type(e).__name__)
def test_a_lost_cluster_is_a_cluster_error_exit_69(fake, exc):
    with pytest.raises(ClusterError) as err:
        with eng.session(EngineConfig(kind="ray", address="auto")):
            raise exc
    assert err.value.exit_code == EXIT_UNAVAILABLE == 69
    msg = str(err.value)
    assert msg.startswith("engine.address 'auto': lost the Ray cluster during the run (")
    assert type(exc).__name__ in msg and " ".join(str(exc).split())[:100] in msg
    assert err.value.__cause__ is exc and fake.shutdowns == 1


def test_errors_of_the_work_itself_pass_unchanged(fake):
    task_err = rex.RayTaskError("read", "Traceback ...", ValueError("bad part")).as_instanceof_cause()
    for exc in (ValueError("bad"), task_err, BrokenPipeError(32, "Broken pipe"), ConfigError("x")):
        with pytest.raises(type(exc)) as err:
            with eng.session(EngineConfig(kind="ray")):
                raise exc
        assert err.value is exc


def test_the_cli_exits_69_on_a_lost_cluster_and_130_on_ctrl_c(tmp_path, fake, capsys):
    c = _site(tmp_path, address="auto")
    assert call("ingest", "--config", str(c)) == 0  # the parts read by the (fake) cluster's tasks
    assert (tmp_path / "w" / "artifacts" / "ratings_raw.parquet").is_dir()
    fake.task_error = rex.NodeDiedError("the head node died")
    # (another data setting: ingest is stale and runs again)
    assert call("ingest", "--config", str(c), "data.max_bad_fraction=0.5") == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert "error: engine.address 'auto': lost the Ray cluster during the run (NodeDiedError: the head node died)" in err
    fake.task_error = KeyboardInterrupt()
    assert call("ingest", "--config", str(c), "data.max_bad_fraction=0.5") == 130
    art = tmp_path / "w" / "artifacts"
    assert not list(art.glob(".*.tmp")) and (art / "ratings_raw.parquet").is_dir()  # nothing half-written


# ----------------------------------------------------------------------------- address unset
# the other Ray running on the machine: the session's head (conftest.py ray_head, 4 CPUs)
def test_address_unset_starts_a_ray_of_its_own_beside_a_running_one(tmp_path, ray_head):
    head = ray_head
    c = _site(tmp_path, workers=1)
    with socket.create_connection(("127.0.0.1", int(head.rsplit(":", 1)[1])), timeout=5):
        pass  # the head answers: ray.init() with no address would have joined it (and failed: exit 78)
    r = run_cli("ingest", "--config", str(c), env={"RAY_ADDRESS": head}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ready = re.search(r"engine: Ray \S+ \(local\) ready in [\d.]+s: (\{.*\})", r.stderr)
    assert ready, r.stderr[-3000:]
    # its own Ray: the CPUs it asked for (workers + 1, at least the machine's), not the head's 4
    assert f"'CPU': {float(max(os.cpu_count() or 1, 2))}" in ready.group(1)
    assert "ratings: 1 part files" in r.stderr and "ingest: done" in r.stderr


def test_joining_a_cluster_too_small_for_the_workers_exits_78(tmp_path, ray_head):
    c = _site(tmp_path, address="auto", workers=5)
    r = run_cli("ingest", "--config", str(c), env={"RAY_ADDRESS": ray_head}, timeout=300)
    assert r.returncode == EXIT_CONFIG, r.stderr[-3000:]
    assert ("error: engine.workers 5 x cpus_per_worker 1 = 5 CPUs, but the cluster at auto has 4: lower "
            "engine.workers or add nodes") in r.stderr
    assert "engine: Ray" not in r.stderr and not (tmp_path / "w" / "artifacts" / "ratings_raw.parquet").exists()


def test_a_failed_fit_names_the_worker_error_that_caused_it():
    """Ray Train's WorkerGroupError says only "Training failed due to worker errors:" on its
    first line; the message names the rank whose error came first, not a peer's knock-on."""
    from ray.train import ControllerError, WorkerGroupError

    from movierec.models._adam_ray import fit_failure

    died = rex.ActorDiedError()
    knock_on = RuntimeError("UnavailableError: Collective ops is aborted by: Socket closed\nTraceback ...")
    exc = WorkerGroupError("[Rank 0] ...\n[Rank 1] ...", {1: knock_on, 0: died})
    msg = fit_failure(exc)
    assert msg.startswith("worker 0: ActorDiedError: ") and "\n" not in msg and len(msg) < 600
    oom = MemoryError("worker 1 ran out of memory")
    assert fit_failure(WorkerGroupError("x", {0: knock_on, 1: oom})) == "worker 1: MemoryError: worker 1 ran out of memory"
    assert fit_failure(ControllerError(ValueError("bad scaling config"))).endswith("ValueError: bad scaling config")
    assert fit_failure(RuntimeError("plain\nsecond line")) == "plain second line"


# ----------------------------------------------------------------------------- Ray's printed lines
def test_a_dead_workers_raylet_error_goes_to_the_log_not_stdout(ray_head, capfd, caplog, monkeypatch):
    """Ray's driver prints the errors raylets push ("(raylet) A worker died ...") on stdout,
    whatever log_to_driver says: into a command's table or list. They go to the log at DEBUG
    (-v), and the failure reaches the caller as the task's exception."""
    root = logging.getLogger()  # pytest's capture only (an earlier in-process command's stream is closed)
    monkeypatch.setattr(root, "handlers", [h for h in root.handlers if type(h).__module__.startswith("_pytest")])
    caplog.set_level(logging.DEBUG, logger="movierec.ray")
    with eng.session(EngineConfig(kind="ray", workers=1, address=ray_head)) as r:
        @r.remote(max_retries=0)
        def die():
            os._exit(1)

        try:
            with pytest.raises(rex.RayError):
                r.get(die.remote())

            def routed():
                return [x.getMessage() for x in caplog.records if x.name == "movierec.ray"
                        and "(raylet)" in x.getMessage() and "worker died" in x.getMessage()]

            deadline = time.monotonic() + 30  # the raylet's error reaches the driver asynchronously
            while not routed() and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            r.shutdown()
    out = capfd.readouterr()
    assert routed(), [x.getMessage()[:200] for x in caplog.records]
    assert all(x.levelno == logging.DEBUG for x in caplog.records if x.name == "movierec.ray")
    assert "worker died" not in out.out and "(raylet)" not in out.out
    assert "worker died" not in out.err, out.err[-3000:]


def test_the_adam_trainer_starts_without_tensorflow_in_the_driver():
    """ray.train.tensorflow imports TensorFlow (0.7 GB, seconds) though the driver only starts
    the workers: the trainer is built from its backend config alone, the same class Ray's
    package holds when it is imported later."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ray.train import ScalingConfig\n"
        "from movierec.models._adam_ray import tensorflow_trainer\n"
        "t = tensorflow_trainer()(lambda c: None, train_loop_config={}, scaling_config=ScalingConfig(num_workers=1))\n"
        "print('tensorflow' in sys.modules)\n"
        "import ray.train.tensorflow as rtf\n"
        "print(rtf.TensorflowConfig is type(t.backend_config), 'tensorflow' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["False", "True", "True"]
