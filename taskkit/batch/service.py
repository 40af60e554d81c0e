"""The one boundary to the Azure Batch service: a small client over azure-batch 15.x.

Everything taskkit asks of Batch goes through :class:`BatchService` (one job read, one job
created, the task ids of a job, one collection of tasks added), and every failure comes out as
a taskkit exception with its exit code. The SDK is an optional extra (``pip install
'taskkit[batch]'``); it is imported only when a service is opened, so building task JSON or
planning a submission needs none of it.

Invariants:

* **No credential is shown or kept.** The account key goes into the SDK's credential object and
  nowhere else: not in a message, a repr, a log record or the plan.
* **Transient failures are retried for as long as the patience says, and no longer**
  (:data:`PATIENT`: seven minutes, above the five Batch asks of every client): 5xx, throttling
  (429, 503 with ``Retry-After``, which is honoured but never past the end), timeouts and lost
  connections. Time ends the retries, not a count; a try still waiting at the end fails.
  Every request taskkit sends is idempotent by id (a task or a job that is
  already there is reported as such, never added twice), so ``POST`` is retried like ``GET``.
* **After a 5xx the next try opens a new connection.** The connections held for reuse are
  closed and the retry itself says ``Connection: close``: a front end that answered 5xx is not
  asked again over the same connection.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from taskkit.batch.patience import PATIENT, Patience, patient_policy
from taskkit.exceptions import (
    ConfigError,
    DataError,
    InputNotFound,
    PermissionDenied,
    TaskFailure,
    TransientError,
)

if TYPE_CHECKING:
    from azure.core.pipeline import PipelineRequest, PipelineResponse

__all__ = [
    "ACCOUNT_ENV",
    "ENDPOINT_ENV",
    "KEY_ENV",
    "AddResult",
    "BatchService",
    "JobFacts",
    "TaskFacts",
    "open_service",
]

ENDPOINT_ENV = "AZURE_BATCH_ENDPOINT"
ACCOUNT_ENV = "AZURE_BATCH_ACCOUNT"
KEY_ENV = "AZURE_BATCH_ACCESS_KEY"

#: Every method, POST included: see the module docstring.
_ALL_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})


@dataclass(frozen=True)
class JobFacts:
    """What a submission must know of an existing job."""

    id: str
    state: str
    pool_id: str | None
    uses_task_dependencies: bool
    on_task_failure: str  # lower case: noaction or performexitoptionsjobaction


@dataclass(frozen=True)
class TaskFacts:
    """One task as Batch reports it: its state, and of its latest run the exit code, the
    retries and requeues so far and the node; its command line."""

    id: str
    state: str
    exit_code: int | None
    retries: int
    requeues: int
    node: str | None
    command_line: str = ""


AddStatus = Literal["added", "exists", "failed", "retry"]


@dataclass(frozen=True)
class AddResult:
    """What Batch said of one task of a collection: ``added``; ``exists`` (a task with its id
    is in the job, whatever its definition); ``failed`` (a client error: the task as written
    is refused, ``reason`` says why); ``retry`` (a server error for this task: send it again)."""

    task_id: str
    status: AddStatus
    reason: str = ""


class BatchService:
    """The requests a submission makes, over one SDK client (see the module docstring)."""

    def __init__(self, client: Any, endpoint: str) -> None:
        self._client = client
        self.endpoint = endpoint

    def __repr__(self) -> str:
        return f"BatchService({self.endpoint!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> BatchService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def job(self, job_id: str) -> JobFacts | None:
        """The job ``job_id``, or None when Batch has no such job."""

        def read() -> JobFacts:
            job = self._client.get_job(
                job_id,
                select=["id", "state", "poolInfo", "usesTaskDependencies", "onTaskFailure"],
            )
            if not isinstance(job.id, str):
                raise _Garbage("a job without an id")
            pool = job.pool_info.pool_id if job.pool_info is not None else None
            return JobFacts(
                id=job.id,
                state=_text(job.state) or "active",
                pool_id=pool,
                uses_task_dependencies=bool(job.uses_task_dependencies),
                on_task_failure=(_text(job.task_failure_mode) or "noaction").lower(),
            )

        try:
            facts: JobFacts = self._call("read job", read, missing=("JobNotFound",))
        except _Missing:
            return None
        return facts

    def create_job(
        self, job_id: str, pool_id: str, *, uses_task_dependencies: bool, on_task_failure: str
    ) -> bool:
        """Create the job; False when a job of that id is already there."""
        from azure.batch import models

        job = models.BatchJobCreateOptions(
            {
                "id": job_id,
                "poolInfo": {"poolId": pool_id},
                "usesTaskDependencies": uses_task_dependencies,
                "onTaskFailure": on_task_failure,
            }
        )
        try:
            self._call(
                "create job",
                lambda: self._client.create_job(job, retry_on_methods=_ALL_METHODS),
                missing=("JobExists",),
            )
        except _Missing:
            return False
        return True

    def task_ids(self, job_id: str) -> set[str]:
        """The ids of the tasks in the job, folded to lower case (Batch ids match ignoring
        case): one request per thousand tasks."""
        ids: set[str] = self._call(
            "list tasks",
            lambda: {t.id.lower() for t in self._client.list_tasks(job_id, select=["id"])},
        )
        return ids

    def task_states(self, job_id: str) -> list[TaskFacts]:
        """Each task of the job as Batch sees it now (one request per thousand tasks)."""
        fields = ["id", "state", "executionInfo", "nodeInfo", "commandLine"]

        def listed() -> list[TaskFacts]:
            out = []
            for task in self._client.list_tasks(job_id, select=fields):
                info, node = task.execution_info, task.node_info
                out.append(
                    TaskFacts(
                        id=task.id,
                        state=_text(task.state) or "active",
                        exit_code=info.exit_code if info is not None else None,
                        retries=info.retry_count or 0 if info is not None else 0,
                        requeues=info.requeue_count or 0 if info is not None else 0,
                        node=node.node_id if node is not None else None,
                        command_line=task.command_line or "",
                    )
                )
            return out

        facts: list[TaskFacts] = self._call("list tasks", listed)
        return facts

    def add(self, job_id: str, tasks: Sequence[Mapping[str, Any]]) -> list[AddResult]:
        """Add one collection (at most 100 tasks, under the request size limit) in one
        request; a result for every task sent."""
        from azure.batch import models

        group = models.BatchTaskGroup(
            task_values=[models.BatchTaskCreateOptions(dict(task)) for task in tasks]
        )
        sent = [str(task["id"]) for task in tasks]

        def send() -> list[AddResult]:
            answer = self._client.create_task_collection(
                job_id, group, retry_on_methods=_ALL_METHODS
            )
            results: dict[str, AddResult] = {}
            for value in answer.result_values or []:
                result = _result(value)
                results[result.task_id.lower()] = result
            return [
                results.get(task_id.lower(), AddResult(task_id, "retry", "no answer for it"))
                for task_id in sent
            ]

        added: list[AddResult] = self._call("add tasks", send)
        return added

    def _call(self, what: str, call: Callable[[], Any], missing: tuple[str, ...] = ()) -> Any:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            DecodeError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        try:
            return call()
        except (DecodeError, _Garbage, AttributeError, KeyError, TypeError, ValueError) as exc:
            # What the SDK could not read, or what it read that Batch never answers.
            raise ConfigError(
                f"{self.endpoint} did not answer as the Batch service does ({what}: "
                f"{_first_line(exc) or type(exc).__name__}): check --endpoint"
            ) from None
        except ClientAuthenticationError as exc:
            raise ConfigError(
                f"Batch refused the credentials ({what}, {_status(exc)}): check "
                f"{ACCOUNT_ENV}/{KEY_ENV} or the identity's role on the account"
            ) from None
        except HttpResponseError as exc:
            code = _error_code(exc)
            if code in missing:
                raise _Missing from None
            raise _translated(what, exc, code) from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            if _untrusted(exc):
                raise ConfigError(
                    f"Batch at {self.endpoint}: its TLS certificate is not trusted ({what}); "
                    "check --endpoint"
                ) from None
            raise TransientError(
                f"Batch at {self.endpoint} could not be reached ({what}): "
                f"{_first_line(exc)}; a re-run carries on"
            ) from None


class _Missing(Exception):
    """The resource asked about is not there (or, on create, already there)."""


class _Garbage(Exception):
    """An answer the service never gives."""


def _untrusted(exc: BaseException) -> bool:
    """Whether a failed request failed on the server's certificate (a setting, not a blip)."""
    import ssl

    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = getattr(seen, "inner_exception", None) or seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _result(value: Any) -> AddResult:
    if not isinstance(value.task_id, str) or value.status is None:
        raise _Garbage("a task result without a task id or status")
    status = _text(value.status).lower()
    code = value.error.code if value.error is not None else None
    if status == "success":
        return AddResult(value.task_id, "added")
    if code == "TaskExists":
        return AddResult(value.task_id, "exists")
    reason = code or status
    if value.error is not None and value.error.message is not None:
        text = getattr(value.error.message, "value", None) or str(value.error.message)
        reason = f"{code}: {_first_line(text)}"
    if status == "servererror":
        return AddResult(value.task_id, "retry", reason)
    if status != "clienterror":
        raise _Garbage(f"a task result of status {status!r}")
    return AddResult(value.task_id, "failed", reason)


def _translated(what: str, exc: Any, code: str | None) -> TaskFailure:
    status = exc.status_code or 0
    message = _first_line(_message(exc) or str(exc))
    text = f"Batch refused to {what}: {code or status}: {message}"
    if status in (401,):
        return ConfigError(text)
    if status == 403:
        return PermissionDenied(text)
    if status == 404:
        return InputNotFound(text)
    if status in (408, 429) or status >= 500:
        return TransientError(f"{text} (still failing after the retries; a re-run carries on)")
    if code in ("ActiveJobAndScheduleQuotaReached",):
        return ConfigError(f"{text} (reuse a job: --job-id of an active job)")
    return DataError(text)


def _text(value: object) -> str:
    """An SDK enum's value (``str()`` of a str enum is its qualified name), or the text."""
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def _status(exc: Any) -> str:
    return str(getattr(exc, "status_code", None) or "no status")


def _error_code(exc: Any) -> str | None:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    return str(code) if code else None


def _message(exc: Any) -> str | None:
    error = getattr(exc, "error", None)
    message = getattr(error, "message", None)
    return str(message) if message else None


def _first_line(text: object) -> str:
    return str(text).strip().splitlines()[0] if str(text).strip() else ""


def open_service(
    endpoint: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    patience: Patience = PATIENT,
) -> BatchService:
    """A :class:`BatchService` for ``endpoint`` (else ``$AZURE_BATCH_ENDPOINT``): with the
    shared key of ``$AZURE_BATCH_ACCOUNT``/``$AZURE_BATCH_ACCESS_KEY`` when both are set, else
    ``DefaultAzureCredential`` (managed identity, environment, Azure CLI login)."""
    env = os.environ if environ is None else environ
    endpoint = endpoint or env.get(ENDPOINT_ENV)
    if not endpoint:
        raise ConfigError(f"no Batch endpoint: give --endpoint URL or set {ENDPOINT_ENV}")
    if not endpoint.startswith(("https://", "http://")):
        raise ConfigError(
            f"Batch endpoint {endpoint!r}: expected https://ACCOUNT.REGION.batch.azure.com"
        )
    try:
        from azure.batch import BatchClient
        from azure.core.pipeline.policies import HTTPPolicy
        from azure.core.pipeline.transport import RequestsTransport
    except ImportError:
        raise ConfigError(
            "talking to Batch needs the azure-batch SDK: pip install 'taskkit[batch]'"
        ) from None
    account, key = env.get(ACCOUNT_ENV), env.get(KEY_ENV)
    credential: Any
    if account and key:
        import base64
        import binascii

        from azure.core.credentials import AzureNamedKeyCredential

        try:
            base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{KEY_ENV} is not an account key (keys are base64)") from None
        credential = AzureNamedKeyCredential(account, key)
    elif account or key:
        missing = KEY_ENV if account else ACCOUNT_ENV
        raise ConfigError(
            f"{missing} is not set: a shared key needs both {ACCOUNT_ENV} and {KEY_ENV}"
        )
    else:
        if endpoint.startswith("http://"):
            raise ConfigError(
                f"no shared key for {endpoint}: a token (managed identity, Azure CLI login) is "
                f"only sent over https://; set {ACCOUNT_ENV} and {KEY_ENV}"
            )
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError:
            raise ConfigError(
                f"no Batch credentials: set {ACCOUNT_ENV} and {KEY_ENV}, or pip install "
                "azure-identity for a managed identity or an Azure CLI login"
            ) from None
        credential = DefaultAzureCredential()

    import requests

    session = requests.Session()

    class FreshAfterServerError(HTTPPolicy):  # type: ignore[type-arg]
        """See the module docstring: after a 5xx, new connections and ``Connection: close``."""

        def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
            if request.context.get("taskkit_after_5xx"):
                request.http_request.headers["Connection"] = "close"
            response = self.next.send(request)
            if response.http_response.status_code >= 500:
                request.context["taskkit_after_5xx"] = True
                session.close()  # the pooled connections: the retry opens a new one
            return response

    retry = patient_policy(patience)
    transport = RequestsTransport(
        session=session,
        session_owner=True,
        connection_timeout=min(30.0, patience.read_timeout, patience.seconds),
        read_timeout=patience.read_timeout,
    )
    client = BatchClient(
        endpoint,
        credential,
        retry_policy=retry,
        per_retry_policies=[FreshAfterServerError()],
        transport=transport,
        logging_enable=False,
    )
    return BatchService(client, endpoint.rstrip("/"))
