"""``movierec serve``: the HTTP service (FastAPI on uvicorn; ``pip install 'movierec[serve]'``).

Every endpoint is a thin shell over :class:`movierec.service.Service`, the code that
``movierec recommend`` and ``movierec feedback`` run, so the service and the CLI give the
same list for the same viewer and check feedback the same way:

=======================================  ================================================
``GET /users/{id}/recommendations``      a viewer's list (``?n=&explain=&strict=``): the
                                         CLI's ``--format json`` body
``POST /recommendations``                a new viewer's list from ratings (fold-in)
``GET /movies/{id}/similar``             the movies closest in the model's taste space
``POST /feedback``                       a rating, comment or share (token required);
                                         in that viewer's next list at once
``GET /health``                          serving version, trained time, data freshness
``GET /metrics``                         Prometheus text: requests, latency, fallbacks,
                                         feedback events, model version
``GET /``                                the dashboard page; ``/docs``: OpenAPI
=======================================  ================================================

Errors are JSON ``{"error": message, "status": code}``: 400 (malformed request, bad id),
401 (token missing or wrong), 404 (unknown movie; unknown viewer with ``strict``), 413 (body
over ``serve.max_body_bytes``), 422 (valid JSON that fails the checks: a movie not in the
catalogue, a rating off the scale), 503 (no model serving yet; writes without a configured
token); never a stack trace.
"""

import hmac
import json
import logging
import os
import time
from importlib import resources
from typing import Any, Optional

from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from movierec._version import __version__
from movierec.config import Config
from movierec.errors import ConfigError, DataError, ModelError, MovieRecError, StorageError
from movierec.service import NotFound, Service

log = logging.getLogger("movierec")

#: the longest id accepted in a path or a body (ids are CSV fields, never this long)
MAX_ID = 256
#: latency buckets (seconds) of the request histogram
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def check_id(value: Any, what: str) -> str:
    """An id from a path or a body: text, 1..MAX_ID characters, no control characters."""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise HTTPError(400, f"{what} must be a string")
    value = str(value).strip()
    if not value or len(value) > MAX_ID:
        raise HTTPError(400, f"{what} must be 1 to {MAX_ID} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise HTTPError(400, f"{what} must not hold control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON's \ud800 escapes can carry
        raise HTTPError(400, f"{what} is not valid Unicode text") from None
    return value


class _TooLarge(StarletteHTTPException):
    """A chunked body grew over the limit while it was read (FastAPI passes HTTP exceptions
    raised while it reads a body through to the handlers)."""


class _Measure:
    """ASGI middleware: request counts and latency per route, and the body size limit (a
    Content-Length over it is refused before the body is read; a chunked body is counted as
    it arrives)."""

    def __init__(self, app, metrics: "_Metrics", service: Service, limit: int) -> None:
        self.app, self.metrics, self.service, self.limit = app, metrics, service, limit

    async def _refuse(self, send) -> None:
        body = json.dumps({"error": f"the request body is over {self.limit} bytes (serve.max_body_bytes)",
                           "status": 413}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]
        started = [False]
        length = dict(scope.get("headers") or ()).get(b"content-length")
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge(413, f"the request body is over {self.limit} bytes (serve.max_body_bytes)")
            return message

        async def watched_send(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                started[0] = True
            await send(message)

        try:
            if length is not None and (not length.isdigit() or int(length) > self.limit):
                status[0] = 413
                await self._refuse(send)
            else:
                await self.app(scope, counted_receive, watched_send)
        except _TooLarge:
            status[0] = 413
            if not started[0]:
                await self._refuse(send)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            m = self.metrics
            m.requests.labels(endpoint=endpoint, method=scope.get("method", ""), status=str(status[0])).inc()
            m.latency.labels(endpoint=endpoint).observe(time.perf_counter() - t0)
            m.watch(self.service)


class _Metrics:
    """The Prometheus metrics of one app (its own registry; with several workers, the
    multiprocess collector over ``PROMETHEUS_MULTIPROC_DIR``)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = None if self.multiprocess else CollectorRegistry()
        kw = {} if self.multiprocess else {"registry": self.registry}
        self.requests = Counter("movierec_requests", "HTTP requests", ["endpoint", "method", "status"], **kw)
        self.latency = Histogram("movierec_request_seconds", "request latency", ["endpoint"], buckets=BUCKETS, **kw)
        self.fallbacks = Counter("movierec_fallbacks", "lists served by a fallback", ["kind"], **kw)
        self.feedback = Counter("movierec_feedback_events", "feedback events recorded", ["kind"], **kw)
        self.reloads = Counter("movierec_model_reloads", "versions switched to or refused", ["outcome"], **kw)
        gkw = dict(kw, multiprocess_mode="liveall") if self.multiprocess else kw
        self.model = Gauge("movierec_model_info", "the serving version (value 1)", ["version"], **gkw)
        self._version: str | None = None
        self._reloads = 0
        self._refused: str | None = None

    def watch(self, svc: Service) -> None:
        """Count the service's version switches and refused versions since the last look."""
        if svc.reloads > self._reloads:
            self.reloads.labels(outcome="switched").inc(svc.reloads - self._reloads)
            self._reloads = svc.reloads
        bad = (svc.reload_error or {}).get("version")
        if bad and bad != self._refused:
            self.reloads.labels(outcome="refused").inc()
        self._refused = bad

    def serving(self, version: str | None) -> None:
        if version != self._version:
            if self._version is not None:
                self.model.labels(version=self._version).set(0)
            if version is not None:
                self.model.labels(version=version).set(1)
            self._version = version

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client import multiprocess

            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg)
            return generate_latest(reg), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def create_app(cfg: Config, service: Optional[Service] = None) -> FastAPI:
    """The FastAPI app over ``service`` (default: a :class:`Service` of ``cfg`` that starts
    even before a model exists and serves the first one promoted)."""
    svc = service or Service(cfg)
    metrics = _Metrics()
    token = cfg.serve.token or os.environ.get(cfg.serve.token_env) or None
    if token is not None and len(token) < 16:
        raise ConfigError(f"serve: the token (serve.token or ${cfg.serve.token_env}) must be at least 16 characters")
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        svc.watch()  # a promoted or rolled-back version is loaded beside the serving one, then swapped
        yield
        svc.stop()

    app = FastAPI(title="movierec", version=__version__, lifespan=lifespan,
                  description="Movie recommendations: lists, new viewers, similar movies, feedback. "
                              "Write endpoints need `Authorization: Bearer <token>`.")
    app.state.service, app.state.metrics = svc, metrics

    class Rating(BaseModel):
        model_config = ConfigDict(extra="forbid")
        movie_id: str = Field(max_length=MAX_ID)
        rating: float

    class NewViewer(BaseModel):
        model_config = ConfigDict(extra="forbid")
        ratings: list[Rating] = Field(min_length=1, max_length=10000)
        n: Optional[int] = Field(None, ge=1)
        user_id: Optional[str] = Field(None, max_length=MAX_ID,
                                       description="a viewer id: their ratings join those the model has")
        explain: bool = False

    class Feedback(BaseModel):
        model_config = ConfigDict(extra="forbid")
        user_id: str = Field(max_length=MAX_ID)
        movie_id: str = Field(max_length=MAX_ID)
        rating: Optional[float] = None
        comment: Optional[str] = Field(None, max_length=20000)
        share_with: Optional[str] = Field(None, max_length=MAX_ID)

    def auth(request: Request, write: bool) -> None:
        if not write and not cfg.serve.protect_reads:
            return
        if token is None:
            raise HTTPError(503, f"no token is configured (set ${cfg.serve.token_env} or serve.token): "
                                 + ("writes are refused" if write else "serve.protect_reads refuses reads"))
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise HTTPError(401, "a valid 'Authorization: Bearer <token>' header is required",
                            {"WWW-Authenticate": "Bearer"})

    def n_of(n: int | None) -> int | None:
        if n is not None and n > cfg.serve.max_n:
            raise HTTPError(422, f"n must be at most {cfg.serve.max_n} (serve.max_n), got {n}")
        return n

    def served(result: dict) -> JSONResponse:
        by = result.get("served_by") or {}
        if result.get("fallback"):
            metrics.fallbacks.labels(kind=result["fallback"]).inc()
        headers = {"X-Model-Version": by.get("version") or ""}
        if by.get("arm"):
            headers["X-Experiment-Arm"] = by["arm"]
        return JSONResponse(result, headers=headers)

    # ------------------------------------------------------------------ errors
    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError):
        return error(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errs):
            return error(400, "the request body is not valid JSON")
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(422, f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(MovieRecError)
    async def _movierec_error(request: Request, exc: MovieRecError):
        if isinstance(exc, NotFound):
            return error(404, str(exc))
        if isinstance(exc, DataError):
            return error(422, str(exc))
        if isinstance(exc, ModelError):
            return error(503, str(exc))
        if isinstance(exc, StorageError):
            log.error("serve: %s", exc)
            return error(503, str(exc))
        log.error("serve: %s", exc)
        return error(500, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("serve: unexpected error on %s %s", request.method, request.url.path)
        return error(500, f"internal error ({exc.__class__.__name__}); see the service's log")

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(request: Request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    app.add_middleware(_Measure, metrics=metrics, service=svc, limit=cfg.serve.max_body_bytes)

    # ------------------------------------------------------------------ endpoints
    @app.get("/users/{user_id}/recommendations", summary="A viewer's list")
    async def recommendations(request: Request, user_id: str, n: Optional[int] = Query(None, ge=1),
                        explain: bool = False, strict: bool = False):
        auth(request, write=False)
        return served(svc.recommend(check_id(user_id, "user id"), n_of(n), explain=explain, strict=strict))

    @app.post("/recommendations", summary="A new viewer's list from their ratings (fold-in)")
    async def new_viewer(request: Request, body: NewViewer):
        auth(request, write=False)
        ratings = [(check_id(r.movie_id, "movie_id"), r.rating) for r in body.ratings]
        if body.user_id is not None:
            return served(svc.recommend(check_id(body.user_id, "user_id"), n_of(body.n), explain=body.explain,
                                        ratings=ratings))
        return served(svc.recommend_new(ratings, n_of(body.n)))

    @app.get("/movies/{movie_id}/similar", summary="Movies close to this one in the model's taste space")
    async def similar(request: Request, movie_id: str, n: Optional[int] = Query(None, ge=1)):
        auth(request, write=False)
        return served(svc.similar(check_id(movie_id, "movie id"), n_of(n)))

    @app.post("/feedback", status_code=201, summary="Record a rating, comment or share")
    def feedback(request: Request, body: Feedback = Body(...)):
        auth(request, write=True)
        event = svc.feedback(check_id(body.user_id, "user_id"), check_id(body.movie_id, "movie_id"), body.rating,
                             body.comment, check_id(body.share_with, "share_with") if body.share_with else None)
        for kind in ("rating", "comment", "share_with"):
            if kind in event:
                metrics.feedback.labels(kind=kind).inc()
        return JSONResponse({"recorded": event}, status_code=201)

    @app.get("/health", summary="What serves, and how fresh it is")
    async def health(request: Request):
        auth(request, write=False)
        h = svc.health()
        return JSONResponse(h, status_code=200 if h["status"] != "unavailable" else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def prometheus(request: Request):
        auth(request, write=False)
        metrics.serving(svc.served.name if svc.served else None)
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    # ------------------------------------------------------------------ the page and its data
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request):  # no data in it (it asks the API, with the token where reads need one)
        return HTMLResponse(resources.files("movierec.resources").joinpath("dashboard.html").read_text("utf-8"))

    @app.get("/api/versions", summary="Model versions, their metrics and gate results")
    def versions(request: Request):
        auth(request, write=False)
        return JSONResponse(_versions(svc, cfg))

    @app.get("/api/report", summary="The serving version's latest evaluation metrics")
    def report(request: Request):
        auth(request, write=False)
        s = svc.require()
        v = svc.registry.get(s.name)
        return JSONResponse({"version": s.name, "metrics": v.metrics, "gate": v.gate})

    @app.get("/api/experiment", summary="The running A/B test and its report so far")
    def experiment(request: Request):
        auth(request, write=False)
        if svc.experiment is None:
            return JSONResponse({"experiment": None})
        from movierec.experiment import report as experiment_report

        out = {"experiment": svc.experiment.describe()}
        try:
            out["report"] = experiment_report(cfg, rounds=200)
        except DataError as exc:
            out["report"] = None
            out["note"] = str(exc)
        return JSONResponse(out)

    return app


def _versions(svc: Service, cfg: Config) -> dict:
    reg = svc.registry
    k = cfg.evaluate.k[0]
    current = svc.served.name if svc.served else None
    rows = []
    for v in reg.versions():
        row = reg.summary(v.name, k)
        row["serving"] = v.name == current
        row["gate"] = v.gate
        rows.append(row)
    return {"current": reg.current_name(), "serving": current, "reload_error": svc.reload_error, "k": k,
            "versions": rows}


def app_from_env():
    """The app of a worker process started by ``movierec serve --workers N`` (uvicorn imports
    this factory in each worker): the config path and overrides come in the environment."""
    import json

    from movierec.config import load_config

    cfg = load_config(os.environ["MOVIEREC_SERVE_CONFIG"], json.loads(os.environ.get("MOVIEREC_SERVE_OVERRIDES", "[]")))
    return create_app(cfg)
