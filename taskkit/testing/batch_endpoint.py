"""A local HTTP endpoint that answers the Azure Batch requests ``taskkit batch submit`` sends,
as the service documents them, and records each request.

The Batch service cannot run outside Azure, so tests point the real azure-batch SDK at this
endpoint instead. It speaks the REST shapes of the service's reference (Get Job, Add Job, List
Tasks, Add Task Collection): the JSON bodies, the error bodies (``{"code", "message": {"lang",
"value"}}``), ``TaskExists`` per task, ``RequestBodyTooLarge`` (413) over 1 MB, 100 tasks at
most a collection, paged listings with ``odata.nextLink``. It checks that every request is
signed (``Authorization: SharedKey ACCOUNT:...``) without checking the signature, and it can
fail on purpose (:meth:`BatchEndpoint.fail`, :attr:`BatchEndpoint.task_errors`).

It is a stand-in for tests, not an emulator: jobs hold tasks, nothing runs.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["BODY_LIMIT", "BatchEndpoint", "Failure", "Recorded"]

#: The service's request size limit.
BODY_LIMIT = 1 << 20
_PAGE = 1000


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived: ``connection`` numbers the TCP connection it came on."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    connection: int
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Failure:
    """Answer ``times`` requests whose path ends with ``suffix`` with ``status``, after letting
    the first ``after`` of them through."""

    status: int
    times: int = 1
    suffix: str = ""
    after: int = 0
    code: str = "ServerBusy"
    close: bool = False  # answer with Connection: close and drop the connection
    retry_after: int | None = None


@dataclass
class _Job:
    id: str
    pool_id: str
    uses_task_dependencies: bool
    on_task_failure: str
    state: str = "active"
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # lower-case id -> task


class BatchEndpoint:
    """The endpoint, started by ``with`` (or :meth:`start`) on a free port of 127.0.0.1."""

    def __init__(self, account: str = "devbatch") -> None:
        self.account = account
        self.jobs: dict[str, _Job] = {}
        self.requests: list[Recorded] = []
        self.failures: list[Failure] = []
        #: Task id -> (status, code) answered for it in a collection, once per entry.
        self.task_errors: dict[str, list[tuple[str, str]]] = {}
        self._lock = threading.Lock()
        self._connections = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        #: Seconds each answer waits before it is sent (a network's round trip).
        self.delay = 0.0
        #: The most requests it was answering at once.
        self.most_at_once = 0
        self._at_once = 0

    @property
    def url(self) -> str:
        assert self._server is not None, "start the endpoint first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_job(
        self,
        job_id: str,
        pool_id: str = "pool",
        *,
        uses_task_dependencies: bool = False,
        on_task_failure: str = "noaction",
        state: str = "active",
        tasks: tuple[str, ...] = (),
    ) -> None:
        job = _Job(job_id, pool_id, uses_task_dependencies, on_task_failure, state)
        for task_id in tasks:
            job.tasks[task_id.lower()] = {"id": task_id, "commandLine": "true"}
        self.jobs[job_id.lower()] = job

    def fail(self, failure: Failure) -> None:
        with self._lock:
            self.failures.append(failure)

    def task_ids(self, job_id: str) -> list[str]:
        return [t["id"] for t in self.jobs[job_id.lower()].tasks.values()]

    def start(self) -> BatchEndpoint:
        endpoint = self

        class Handler(_Handler):
            owner = endpoint

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> BatchEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def posted(self, suffix: str) -> Iterator[Recorded]:
        """The POST requests whose path ends with ``suffix``, in order."""
        return (r for r in list(self.requests) if r.method == "POST" and r.path.endswith(suffix))

    # -- answering ----------------------------------------------------------------------------

    def _failure_for(self, path: str) -> Failure | None:
        with self._lock:
            for failure in self.failures:
                if failure.times > 0 and path.endswith(failure.suffix):
                    if failure.after > 0:
                        failure.after -= 1
                        continue
                    failure.times -= 1
                    return failure
        return None

    def answer(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        with self._lock:
            if method == "GET" and len(parts) == 2 and parts[0] == "jobs":
                return self._get_job(parts[1])
            if method == "POST" and parts == ["jobs"]:
                return self._add_job(json.loads(body))
            if method == "GET" and len(parts) == 3 and parts[2] == "tasks":
                return self._list_tasks(parts[1], query)
            if method == "POST" and len(parts) == 3 and parts[2] == "addtaskcollection":
                return self._add_tasks(parts[1], body)
        return _error(404, "ResourceNotFound", f"no such resource {method} {path}")

    def _get_job(self, job_id: str) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        job = self.jobs.get(job_id.lower())
        if job is None:
            return _error(404, "JobNotFound", "The specified job does not exist.")
        return (
            200,
            {
                "id": job.id,
                "url": f"{self.url}/jobs/{job.id}",
                "eTag": "0x8DC0000000000001",
                "state": job.state,
                "poolInfo": {"poolId": job.pool_id},
                "usesTaskDependencies": job.uses_task_dependencies,
                "onTaskFailure": job.on_task_failure,
            },
            {},
        )

    def _add_job(self, job: dict[str, Any]) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        job_id = job["id"]
        if job_id.lower() in self.jobs:
            return _error(409, "JobExists", "The specified job already exists.")
        self.jobs[job_id.lower()] = _Job(
            job_id,
            job["poolInfo"]["poolId"],
            bool(job.get("usesTaskDependencies", False)),
            job.get("onTaskFailure", "noaction"),
        )
        return 201, None, {"Location": f"{self.url}/jobs/{job_id}", "ETag": "0x8DC1"}

    def _list_tasks(
        self, job_id: str, query: dict[str, list[str]]
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        job = self.jobs.get(job_id.lower())
        if job is None:
            return _error(404, "JobNotFound", "The specified job does not exist.")
        start = int(query.get("$skiptoken", ["0"])[0])
        tasks = list(job.tasks.values())[start : start + _PAGE]
        page: dict[str, Any] = {"value": [_listed(t) for t in tasks]}
        if start + _PAGE < len(job.tasks):
            page["odata.nextLink"] = (
                f"{self.url}/jobs/{job.id}/tasks?api-version=2025-06-01&$select=id"
                f"&$skiptoken={start + _PAGE}"
            )
        return 200, page, {}

    def _add_tasks(
        self, job_id: str, body: bytes
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        if len(body) > BODY_LIMIT:
            return _error(413, "RequestBodyTooLarge", "The request body is too large.")
        job = self.jobs.get(job_id.lower())
        if job is None:
            return _error(404, "JobNotFound", "The specified job does not exist.")
        tasks = json.loads(body)["value"]
        if len(tasks) > 100:
            return _error(400, "InvalidRequestBody", "At most 100 tasks may be added at once.")
        results = []
        for task in tasks:
            task_id = task["id"]
            scripted = self.task_errors.get(task_id)
            if scripted:
                status, code = scripted.pop(0)
                results.append(
                    {
                        "status": status,
                        "taskId": task_id,
                        "error": {"code": code, "message": {"lang": "en-US", "value": code}},
                    }
                )
                continue
            if task_id.lower() in job.tasks:
                results.append(
                    {
                        "status": "clientError",
                        "taskId": task_id,
                        "error": {
                            "code": "TaskExists",
                            "message": {
                                "lang": "en-US",
                                "value": "The specified task already exists.",
                            },
                        },
                    }
                )
                continue
            job.tasks[task_id.lower()] = task
            results.append(
                {
                    "status": "success",
                    "taskId": task_id,
                    "eTag": "0x8DC0000000000002",
                    "lastModified": "2026-12-04T12:00:00.000Z",
                    "location": f"{self.url}/jobs/{job.id}/tasks/{task_id}",
                }
            )
        return 200, {"value": results}, {}


def _listed(task: dict[str, Any]) -> dict[str, Any]:
    """A task as List Tasks shows it: what was added, in the state set for it (``active``)."""
    shown = {"id": task["id"], "state": task.get("state", "active")}
    for name in ("commandLine", "executionInfo", "nodeInfo"):
        if name in task:
            shown[name] = task[name]
    return shown


def _error(status: int, code: str, text: str) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
    return (
        status,
        {
            "odata.metadata": "https://batch/$metadata#Microsoft.Azure.Batch.Protocol.Entities"
            ".Container.errors/@Element",
            "code": code,
            "message": {"lang": "en-US", "value": f"{text}\nRequestId:0000\nTime:2026-12-04"},
        },
        {},
    )


class _Handler(BaseHTTPRequestHandler):
    owner: BatchEndpoint
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection_number = next(self.owner._connections)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the recorded requests are the log

    def _serve(self) -> None:
        owner = self.owner
        with owner._lock:
            owner._at_once += 1
            owner.most_at_once = max(owner.most_at_once, owner._at_once)
        try:
            if owner.delay:
                time.sleep(owner.delay)
            self._answer()
        finally:
            with owner._lock:
                owner._at_once -= 1

    def _answer(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = parse_qs(split.query)
        failure = self.owner._failure_for(split.path)
        extra: dict[str, str] = {}
        if not headers.get("authorization", "").startswith(f"SharedKey {self.owner.account}:"):
            status, answer, extra = _error(
                403, "AuthenticationFailed", "Server failed to authenticate the request."
            )
        elif failure is not None:
            status, answer, _ = _error(failure.status, failure.code, "Scripted failure.")
            if failure.retry_after is not None:
                extra["Retry-After"] = str(failure.retry_after)
            if failure.close:
                extra["Connection"] = "close"
                self.close_connection = True
        else:
            status, answer, extra = self.owner.answer(self.command, split.path, query, body)
        self.owner.requests.append(
            Recorded(self.command, split.path, query, headers, body, self.connection_number, status)
        )
        payload = b"" if answer is None else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;odata=minimalmetadata")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("request-id", "00000000-0000-0000-0000-000000000000")
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _serve
