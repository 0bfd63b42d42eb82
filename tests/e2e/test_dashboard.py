"""The dashboard page (``GET /``) in a real headless Chromium, over a running service.

A small site is trained (``movierec train``, then ``movierec run`` makes and gates a second
version), the app runs on uvicorn in a thread, and Playwright drives Debian's ``chromium``.
Skipped, saying why, where the ``playwright`` package or a chromium executable is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import make_data, run_cli, write_config

pytest.importorskip("playwright.sync_api", reason="the dashboard test drives a browser with Playwright "
                                                  "(pip install playwright; it uses the system chromium)")
pytest.importorskip("uvicorn", reason="the dashboard test runs the HTTP service (pip install 'movierec[serve]')")
pytest.importorskip("fastapi", reason="the dashboard test runs the HTTP service (pip install 'movierec[serve]')")


def _chromium() -> str | None:
    for cand in (os.environ.get("MOVIEREC_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium",
                 shutil.which("chromium-browser")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


CHROMIUM = _chromium()
if CHROMIUM is None:
    pytest.skip("no chromium executable (apt-get install chromium, or set MOVIEREC_CHROMIUM)",
                allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

TOKEN = "dashboard-test-token-0123456789"
VIEWER = "u00000"  # a viewer of the generated data (make_data): known to the model
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A trained site with two versions: the first from ``train`` (no metrics), the serving
    one from ``run`` (gated against the first, with holdout metrics)."""
    base = tmp_path_factory.mktemp("dashboard")
    data = make_data(base / "data")
    cfg = write_config(base / "config.yaml", data, base / "work")
    r = run_cli("train", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    r = run_cli("run", "--config", str(cfg), "model.seed=1")  # a changed config: a new version, gated
    assert r.returncode == 0, r.stderr
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def server(site):
    """The service on a free port, in a thread (token from $MOVIEREC_SERVE_TOKEN)."""
    import uvicorn

    from movierec.config import load_config
    from movierec.server import create_app

    cfg = load_config(str(site))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(cfg.serve.token_env, TOKEN)
        app = create_app(cfg)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, name="dashboard-uvicorn", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            status, health = _get(base + "/health")
            if status == 200:
                break
        except OSError:
            pass
        assert thread.is_alive(), "uvicorn stopped before answering /health"
        assert time.monotonic() < deadline, "the service did not answer /health in 30 s"
        time.sleep(0.05)
    yield base
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(server + "/")
    expect(pg.locator("body[data-loaded=true]")).to_have_count(1)
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _movie_ids(page) -> list[str]:
    return page.locator("#list tr[data-movie-id]").evaluate_all("rows => rows.map(r => r.dataset.movieId)")


def _load(page, viewer: str) -> None:
    page.fill("#viewer-id", viewer)
    page.click("#load-list")
    expect(page.locator("#list")).to_have_attribute("data-state", "ready")


def test_versions_health_report_and_experiment(page, server):
    status, versions = _get(server + "/api/versions")
    assert status == 200
    serving = versions["serving"]
    names = [v["version"] for v in versions["versions"]]
    assert len(names) == 2 and serving == names[-1]
    previous = names[0]

    # the health block names the serving version
    expect(page.locator("#health-version")).to_have_text(serving)
    expect(page.locator("#health")).to_contain_text("ok")

    # both versions, newest first, the serving one marked, with its metrics and gate verdict
    rows = page.locator("#versions tr[data-version]")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-version", serving)
    cur = page.locator(f'#versions tr[data-version="{serving}"]')
    expect(cur).to_have_attribute("data-serving", "true")
    expect(cur).to_contain_text("serving")
    cur_row = next(v for v in versions["versions"] if v["version"] == serving)
    expect(cur).to_contain_text(f"{cur_row['rmse']:.4f}")
    expect(cur).to_contain_text(f"{cur_row['ndcg@10']:.4f}")
    for reason in cur_row["gate"]["reasons"]:  # the gate's reasons, compared with the previous version
        expect(cur.locator(".gate")).to_contain_text(reason)
    expect(cur.locator(".gate")).to_contain_text(previous)
    old = page.locator(f'#versions tr[data-version="{previous}"]')
    expect(old).to_have_attribute("data-serving", "false")
    expect(old.locator(".gate")).to_contain_text("promoted without a gate")

    # the latest evaluation: the serving version's holdout metrics
    expect(page.locator("#report-version")).to_have_text(serving)
    expect(page.locator('#report tr[data-metric="rmse"]')).to_contain_text(f"{cur_row['rmse']:.4f}")
    expect(page.locator('#report tr[data-metric="ndcg@10"]')).to_be_visible()

    expect(page.locator("#experiment")).to_contain_text("No experiment is running")


def test_try_a_viewer_rate_and_watch_the_list_change(page, server):
    _load(page, VIEWER)
    rows = page.locator("#list tr[data-movie-id]")
    expect(rows).to_have_count(10)
    before = _movie_ids(page)
    # every row says why, in words (the evidence behind the model's score)
    explanations = page.locator("#list tr[data-movie-id] td.explanation").all_inner_texts()
    assert len(explanations) == 10 and all(len(t.strip()) > 10 and "no explanation" not in t for t in explanations), \
        explanations
    expect(page.locator("#list-user")).to_have_text(VIEWER)
    _, h0 = _get(server + "/health")
    events0 = h0["data"]["feedback_events_since_training"]

    top = rows.nth(0)
    # no token: the API's 401 in the status line, the list as it was
    page.fill("#token", "")
    top.locator('[data-rate="1"]').click()
    expect(page.locator("#status")).to_have_attribute("data-kind", "error")
    expect(page.locator("#status")).to_contain_text("401")
    expect(page.locator("#status")).to_contain_text("Authorization: Bearer")
    assert _movie_ids(page) == before

    # a wrong token: refused the same way
    page.fill("#token", "not-the-token-but-long-enough")
    page.locator("#status").evaluate("s => { s.textContent = ''; s.dataset.kind = ''; }")
    top.locator('[data-rate="1"]').click()
    expect(page.locator("#status")).to_have_attribute("data-kind", "error")
    expect(page.locator("#status")).to_contain_text("401")
    assert _movie_ids(page) == before
    _, h1 = _get(server + "/health")
    assert h1["data"]["feedback_events_since_training"] == events0  # nothing recorded

    # the right token: the top movie rated 1 star leaves the reloaded list
    page.fill("#token", TOKEN)
    top.locator('[data-rate="1"]').click()
    expect(page.locator("#status")).to_contain_text("Recorded")
    expect(page.locator("#status")).to_have_attribute("data-kind", "ok")
    expect(page.locator(f'#list tr[data-movie-id="{before[0]}"]')).to_have_count(0)
    expect(rows).to_have_count(10)
    after = _movie_ids(page)
    assert after[0] != before[0] and before[0] not in after
    _, h2 = _get(server + "/health")
    assert h2["data"]["feedback_events_since_training"] == events0 + 1
    expect(page.locator("#health-feedback")).to_have_text(str(events0 + 1))
    if os.environ.get("MOVIEREC_DASHBOARD_SCREENSHOT"):  # a look at the page: the path to write it to
        page.screenshot(path=os.environ["MOVIEREC_DASHBOARD_SCREENSHOT"], full_page=True)

    # the token stays for this tab's session (sessionStorage), not in the page's address
    page.reload()
    expect(page.locator("#token")).to_have_value(TOKEN)
    assert TOKEN not in page.url


def test_text_from_the_api_is_not_html(page):
    """An unknown viewer's id comes back in the response; shown as text, never as markup."""
    evil = '<img id="pwned" src="x" onerror="document.body.dataset.pwned=1">'
    _load(page, evil)
    expect(page.locator("#list-user")).to_have_text(evil)
    expect(page.locator("#list-info")).to_contain_text("fallback")
    assert page.locator("#pwned").count() == 0
    assert page.evaluate("document.body.dataset.pwned") is None


def test_api_errors_show_in_the_status_line(page):
    page.fill("#list-n", "1000")  # over serve.max_n: the API's 422 message
    _load_err = page.locator("#status")
    page.fill("#viewer-id", VIEWER)
    page.click("#load-list")
    expect(_load_err).to_have_attribute("data-kind", "error")
    expect(_load_err).to_contain_text("422")
    expect(_load_err).to_contain_text("serve.max_n")


#: GET /api/experiment while a test runs, in the shape movierec.experiment.report gives
EXPERIMENT = {
    "experiment": {"name": "bigger-factors", "exposure_log": "/srv/work/serve/exposures.jsonl",
                   "arms": {"a": {"version": "v-a", "share": 0.5}, "b": {"version": "v-b", "share": 0.5}}},
    "report": {
        "experiment": "bigger-factors", "attribution_hours": 168.0, "confidence": 0.95, "feedback_attributed": 40,
        "arms": {
            "a": {"versions": ["v-a"], "lists": 300, "viewers": 120, "hit_rate": 0.05, "hit_rate_ci": [0.03, 0.07],
                  "rated_exposures": 60, "mean_rating": 3.5, "mean_rating_ci": [3.2, 3.8], "coverage": 0.61,
                  "movies_listed": 92},
            "b": {"versions": ["v-b"], "lists": 310, "viewers": 118, "hit_rate": 0.09, "hit_rate_ci": [0.06, 0.12],
                  "rated_exposures": 70, "mean_rating": None, "mean_rating_ci": None, "coverage": 0.66,
                  "movies_listed": 99},
        },
        "comparison": {"metric": "hit_rate", "difference": 0.04, "p_value": 0.01,
                       "verdict": "b is better (hit rate +0.0400, p = 0.01)"},
        "groups": {"gender": {"a": {"groups": {"F": {"viewers": 60, "hit_rate": 0.04},
                                               "M": {"viewers": 60, "hit_rate": 0.06}},
                                    "best": "M", "worst": "F", "gap": 0.02, "gap_ci": [-0.01, 0.05],
                                    "significant": False}}},
    },
}


def test_experiment_section_renders_a_report(page):
    """The experiment section over a report (only /api/experiment is stubbed: a site with
    exposures and attributed feedback takes a real test its own minutes)."""
    page.route("**/api/experiment", lambda route: route.fulfill(status=200, content_type="application/json",
                                                               body=json.dumps(EXPERIMENT)))
    page.click("#refresh")
    box = page.locator("#experiment")
    expect(box).to_contain_text("bigger-factors")
    expect(page.locator('#experiment-arms tr[data-arm="b"]')).to_contain_text("v-b")
    expect(page.locator('#experiment-arms tr[data-arm="b"]')).to_contain_text("50.0%")
    a = page.locator('#experiment-report tr[data-arm="a"]')
    expect(a).to_contain_text("5.0%")
    expect(a).to_contain_text("[3.0%, 7.0%]")
    expect(a).to_contain_text("3.50")
    expect(page.locator('#experiment-report tr[data-arm="b"]')).to_contain_text("9.0%")
    expect(page.locator("#experiment-verdict")).to_contain_text("b is better (hit rate +0.0400, p = 0.01)")
    expect(box).to_contain_text("gender")
    expect(box).not_to_contain_text("No experiment is running")
