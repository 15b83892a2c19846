"""The web application of `runner serve` (FastAPI, served by uvicorn: the stack of MLflow's own scoring server).

``POST /invocations`` takes MLflow's scoring formats and answers ``{"predictions": [...]}`` as MLflow does, with
the version, the alias and the request id beside them (and in the ``X-Request-ID`` header); ``GET /health`` says
what is served and how the request log is doing; ``GET /version`` what the version is; ``GET /ping`` is MLflow's.
A bad request is answered 400 (not one of the formats) or 422 (rows that break the signature, the data
dictionary or the purpose rule), one readable message per problem, never a stack trace.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from runner.config import Config, load_config
from runner.data.dictionary import DataDictionary
from runner.data.warehouse import Warehouse
from runner.errors import RunnerError
from runner.serving.champion import Champion
from runner.serving.checks import check
from runner.serving.requests_log import RequestLog
from runner.tracking.registry import Registry
from runner.tracking.scoring import BadRequest, ServedVersion, parse_request, reference_levels

log = logging.getLogger("runner.serve")
MAX_LOGGED_BODY = 10_000  # characters of a refused body kept in the request log
# A caller's X-Request-ID is kept when it is an id (as proxies and tracing systems make them); anything else (a
# 60 KB header, spaces, quotes, control characters) gets one of the server's, which the answer's header returns.
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}")


@dataclass(frozen=True)
class Settings:
    model: str
    alias: str = "champion"
    config: str | None = None  # runner.yaml; None: RUNNER_CONFIG or the nearest one
    refresh: float = 30.0  # seconds between looks at the alias
    sample: float = 1.0  # share of requests logged
    queue: int = 10_000  # requests the log holds while the warehouse is slow
    flush_timeout: float = 10.0  # how long a stopping server tries to write what is queued

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


class Service:
    """What the endpoints share: the served version, the checks' context and the request log."""

    def __init__(self, settings: Settings, config: Config):
        self.settings, self.config = settings, config
        self.registry = Registry(config.stores.tracking_uri)
        self.champion = Champion(self.registry, settings.model, settings.alias, settings.refresh)
        self.dictionary = DataDictionary.load(config.dictionary) if config.dictionary.is_file() else None
        self.warehouse = Warehouse(config.stores.warehouse_url)
        self.log = RequestLog(self.warehouse.write_requests, capacity=settings.queue, sample=settings.sample)
        self._levels: dict[str, dict[str, set[str]]] = {}

    def start(self) -> None:
        self.champion.start()
        self.log.start()

    def stop(self) -> None:
        self.champion.stop()
        self.log.close(self.settings.flush_timeout)

    def context(self, served: ServedVersion) -> tuple[str | None, str | None, dict[str, set[str]]]:
        """(table, purpose, levels seen in training) of a served version."""
        table = served.tags.get("table") or None
        pipeline = self.config.pipelines.get(served.tags.get("pipeline", ""))
        purpose = pipeline.purpose if pipeline is not None else None
        if served.version not in self._levels:
            self._levels[served.version] = reference_levels(self.registry, served.tags)
        return table, purpose, self._levels[served.version]

    def score(self, body: bytes, request_id: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, answer) of one request, logged."""
        received, started = datetime.now(timezone.utc), time.perf_counter()
        served = self.champion.current  # this request's version, whatever the alias does meanwhile
        model = {"name": served.name, "version": served.version, "alias": served.alias}
        base = {"request_id": request_id, "received_at": received.replace(tzinfo=None), "model_name": served.name,
                "model_version": served.version, "alias": served.alias}

        def refused(status: int, problems: list[str], kind: str) -> tuple[int, dict[str, Any]]:
            row = {**base, "row": 0, "inputs": body[:MAX_LOGGED_BODY].decode(errors="replace"), "score": None,
                   "latency_ms": (time.perf_counter() - started) * 1000, "status": kind,
                   "error": "; ".join(problems), "flags": None}
            self.log.record(1, lambda: [row])
            return status, {"error": problems[0] if len(problems) == 1 else f"{len(problems)} problems",
                            "problems": problems, "model": model, "request_id": request_id}

        try:
            frame = parse_request(body, served.schema)
            table, purpose, levels = self.context(served)
            problems, flags = check(frame, served, self.dictionary, table, purpose, levels)
            if problems:
                return refused(422, problems, "rejected")
            inputs = served.inputs(frame)
            scores = served.scores(inputs)
        except BadRequest as exc:
            return refused(400, [str(exc)], "rejected")
        except RunnerError as exc:
            log.error("request %s failed: %s", request_id, exc)
            return refused(500, [str(exc)], "error")
        except Exception as exc:  # noqa: BLE001 - the model itself failed on these rows: said in one line
            log.exception("request %s: the model failed", request_id)
            return refused(500, [f"the model could not score these rows: {type(exc).__name__}: {exc}"], "error")
        latency = (time.perf_counter() - started) * 1000

        def rows() -> list[dict[str, Any]]:  # in the log's writer thread; column lists, not to_dict: a quarter the work
            names = served.columns
            return [{**base, "row": row, "inputs": json.dumps(dict(zip(names, values)), default=str), "score": score,
                     "latency_ms": latency, "status": "ok", "error": None, "flags": "; ".join(flags[row]) or None}
                    for row, (values, score) in enumerate(zip(zip(*(inputs[name].tolist() for name in names)),
                                                              scores))]

        self.log.record(len(scores), rows)
        answer: dict[str, Any] = {"predictions": scores, "model": model, "request_id": request_id}
        if any(flags):
            answer["flags"] = {str(row): found for row, found in enumerate(flags) if found}
        return 200, answer

    def health(self) -> dict[str, Any]:
        served, log_stats = self.champion.current, self.log.stats()
        degraded = log_stats["failing"] or log_stats["dropped"] or self.champion.last_error
        return {"status": "degraded" if degraded else "ok", "model": served.name, "version": served.version,
                "alias": served.alias, "serving_since": datetime.fromtimestamp(self.champion.switched_at,
                                                                               timezone.utc).isoformat(),
                "alias_check_error": self.champion.last_error, "request_log": log_stats}

    def version(self) -> dict[str, Any]:
        served = self.champion.current
        tags = served.tags
        return {"model": served.name, "version": served.version, "alias": served.alias,
                "training_data_digest": tags.get("training_data_digest", ""), "trained_at": tags.get("trained_at", ""),
                "trained_by": tags.get("trained_by", ""), "run_id": tags.get("run_id", ""),
                "pipeline": tags.get("pipeline", ""), "table": tags.get("table", ""), "inputs": list(served.columns)}


def create_app(settings: Settings) -> FastAPI:
    """The FastAPI application serving ``settings.model`` at ``settings.alias``."""
    service = Service(settings, load_config(settings.config))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        yield
        service.stop()  # after uvicorn let the requests in flight finish

    app = FastAPI(title=f"runner serve {settings.model}@{settings.alias}", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)

    @app.post("/invocations")
    async def invocations(request: Request) -> JSONResponse:
        given = request.headers.get("x-request-id") or ""
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        body = await request.body()
        status, answer = await run_in_threadpool(service.score, body, request_id)
        return JSONResponse(answer, status_code=status, headers={"X-Request-ID": request_id})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return service.health()

    @app.get("/version")
    async def version() -> dict[str, Any]:
        return service.version()

    @app.get("/ping")
    async def ping() -> JSONResponse:
        return JSONResponse({}, status_code=200)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:  # never a stack trace to a client
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    app.state.service = service
    return app


def from_environment() -> FastAPI:
    """The application for uvicorn's worker processes (``--workers``): settings in ``RUNNER_SERVE_SETTINGS``."""
    import os

    return create_app(Settings(**json.loads(os.environ["RUNNER_SERVE_SETTINGS"])))
