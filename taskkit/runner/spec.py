"""What one ``taskkit run`` is asked to do, validated once at the edge.

A :class:`RunSpec` is built from four sources, each validated on its own so that an error names
where the bad value came from, then merged with the later winning::

    defaults  <  spec file (TOML, YAML or JSON)  <  TASKKIT_* environment  <  command line

Job and task ids fall back to Azure Batch's ``AZ_BATCH_JOB_ID``/``AZ_BATCH_TASK_ID`` last of all.
A setting's variable is ``TASKKIT_`` and its name in capitals (``TASKKIT_MAX_RETRIES``), except
the node cache's ``TASKKIT_NODE_CACHE`` (:mod:`taskkit.envnames`).

Invariants: a :class:`RunSpec` is frozen and every value in it is valid (codes parse, ids are
Batch ids, durations are positive and no longer than :data:`LONGEST` allows, inputs and outputs
are parsed into :class:`~taskkit.transfer.stage_plan.Input` and
:class:`~taskkit.transfer.patterns.Output` values), so nothing after this module re-checks or
re-parses them. Inputs and outputs keep the text they were given as too (``SRC=DEST``,
``GLOB=DEST``): the work's fingerprint and ``task-json`` read them as written, and a
serialized spec writes them back. The transfer settings (``jobs`` to ``verbose``) are those of
``taskkit stage`` and ``taskkit upload``, checked here for those commands too
(:func:`check_setting`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FieldSerializationInfo,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from taskkit.envnames import env_variable
from taskkit.exceptions import ConfigError, UsageError
from taskkit.redaction import SIGNED_QUERY, public_url, redact, signed
from taskkit.runner.codes import CodeSet
from taskkit.runner.policy import ExitPolicy
from taskkit.runner.settings import TransferSettings
from taskkit.storage.retry import RetryBudget
from taskkit.storage.urls import bad_url
from taskkit.transfer.patterns import Output, parse_output
from taskkit.transfer.stage_plan import Input, parse_input

__all__ = [
    "BATCH_ID",
    "LONGEST",
    "TASK_LIFETIME",
    "RunSpec",
    "check_setting",
    "load_spec_file",
    "parse_duration",
    "parse_size",
    "resolve",
    "unique_keys",
]

#: An Azure Batch job or task id: 1 to 64 letters, digits, ``-`` and ``_``.
BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|d|h|m|s)?", re.IGNORECASE)
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, None: 1.0}
#: Settings whose environment variable holds several values, one per line.
_LISTS = ("inputs", "outputs")
#: Batch ends every task at the latest 180 days after it was added to its job, in seconds.
TASK_LIFETIME = 180 * 86400.0
#: Logs, heartbeats and checkpoint syncs are writes to the store: not more often than this.
MIN_INTERVAL = 0.1
#: The longest each duration may be. No duration is of use beyond a task's lifetime: the deadline
#: would never fire (and task-json would write a maxWallClockTime Batch cannot hold), a sync
#: or progress line would never come. The log interval is also the heartbeat's, and another
#: node calls an attempt interrupted once its heartbeat is three intervals old: three must fit.
LONGEST = {
    "deadline": TASK_LIFETIME,
    "log_interval": TASK_LIFETIME / 3,
    "checkpoint_interval": TASK_LIFETIME,
    "progress_interval": TASK_LIFETIME,
    "retry_budget": TASK_LIFETIME,
}
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_duration(value: object, *, zero: bool = False) -> float:
    """Seconds from ``90``, ``"90s"``, ``"5m"``, ``"2h30m"``, ``"1d"``, ``"250ms"``; none
    (``0``) only when ``zero`` allows it."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text, seconds, at = value.strip(), 0.0, 0
        units: set[str | None] = set()
        while at < len(text):
            match = _DURATION.match(text, at)
            if match is None or match.end() == at:
                raise ValueError(f"{value!r} is not a duration (e.g. 90s, 5m, 2h30m)")
            unit = match.group(2).lower() if match.group(2) else None
            if unit is None and (match.end() != len(text) or at > 0):
                raise ValueError(f"{value!r} is not a duration (e.g. 90s, 5m, 2h30m)")
            if unit in units:  # '1h1h' is a slip, not two hours
                raise ValueError(f"{value!r} gives {unit!r} twice (e.g. 90s, 5m, 2h30m)")
            units.add(unit)
            seconds += float(match.group(1)) * _UNIT_SECONDS[unit]
            at = match.end()
            while at < len(text) and text[at] == " ":
                at += 1
    else:
        raise ValueError(f"{value!r} is not a duration (e.g. 90s, 5m, 2h30m)")
    if not (seconds >= 0 if zero else seconds > 0) or seconds == float("inf"):
        raise ValueError(f"{value!r} is not a {'' if zero else 'positive '}duration")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from ``500M``, ``20G``, ``1T`` (binary units; ``GiB`` and ``GB`` alike) or plain
    bytes."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{value!r} is not a size (e.g. 500M, 20G)")
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    number = text.rstrip("KMGT")
    try:
        size = float(number) * _SIZE_UNITS[text[len(number) :]]
    except (KeyError, ValueError):
        raise ValueError(f"{value!r} is not a size (e.g. 500M, 20G)") from None
    if not size >= 0 or size == float("inf"):
        raise ValueError(f"{value!r} is not a size of zero bytes or more")
    return int(size)


def _shown(seconds: float) -> str:
    """``180 days``, ``180 days 1 s``, ``90 s``: exact enough that two different values never
    read the same."""
    days, rest = divmod(seconds, 86400)
    if not days:
        return f"{seconds:g} s"
    return f"{days:g} days" + (f" {rest:g} s" if rest else "")


#: Batch holds maxTaskRetryCount in a 32-bit integer: a larger count is refused at submission.
MAX_RETRY_COUNT = 2**31 - 1
#: Requests in flight: each is a thread; past this the threads cost more than they bring.
MAX_JOBS = 1024
#: Tries of one request: the retry budget bounds the time, this the count.
MAX_TRIES = 100
_MOVE = TransferSettings()  # the transfer settings' defaults, defined with them


class RunSpec(BaseModel):
    """The settings of one ``taskkit run``; see the module docstring for where they come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: tuple[str, ...] = ()
    inputs: tuple[Input, ...] = ()
    outputs: tuple[Output, ...] = ()
    state: str | None = None
    job_id: str | None = None
    task_id: str | None = None
    workdir: str | None = None
    max_retries: int = Field(0, ge=-1, le=MAX_RETRY_COUNT)
    success_codes: str = "0"
    permanent_codes: str = ""
    retryable_codes: str | None = None
    deadline: float | None = None
    log_interval: float = 30.0
    checkpoint_dir: str | None = None
    checkpoint_interval: float = 300.0
    allow_empty: bool = False
    # How stage and upload transfer, as taskkit stage and taskkit upload take it.
    jobs: int | None = Field(_MOVE.jobs, ge=1, le=MAX_JOBS)
    cache_dir: str | None = _MOVE.cache_dir
    no_node_cache: bool = _MOVE.no_node_cache
    cache_max_bytes: int | None = _MOVE.cache_max_bytes
    retries: int = Field(_MOVE.retries, ge=1, le=MAX_TRIES)
    retry_budget: float = _MOVE.retry_budget
    progress_interval: float = _MOVE.progress_interval
    verbose: bool = _MOVE.verbose
    #: ``inputs`` and ``outputs`` as given (``SRC=DEST``, ``GLOB=DEST``), one text per value.
    _given: dict[str, tuple[str, ...]] = PrivateAttr(default_factory=dict)

    @field_validator("command", "inputs", "outputs", mode="before")
    @classmethod
    def _strings(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, (str, *_PARSED)):
            value = (value,)
        if isinstance(value, Sequence) and not all(
            isinstance(v, str) or (info.field_name != "command" and isinstance(v, _PARSED))
            for v in value
        ):
            raise ValueError("every item must be a string")
        if info.field_name == "command" or not isinstance(value, Sequence):
            return value
        # Parsed here, once: a malformed SRC=DEST or GLOB=DEST is refused with the settings,
        # as the UsageError taskkit stage or upload raise for it (pydantic passes an error
        # that is not a ValueError through as it is).
        parse = parse_input if info.field_name == "inputs" else parse_output
        return tuple(parse(v) if isinstance(v, str) else v for v in value)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_given(cls, data: Any, handler: ModelWrapValidatorHandler[RunSpec]) -> RunSpec:
        spec = handler(data)
        if isinstance(data, RunSpec) or spec._given:
            return spec  # already made: its texts came with it
        given = data if isinstance(data, Mapping) else {}
        for name in _LISTS:
            value = given.get(name, ())
            items = (value,) if isinstance(value, (str, *_PARSED)) else value
            spec._given[name] = tuple(map(_text, items))
        return spec

    @model_validator(mode="after")
    def _inputs_outside_the_checkpoint(self) -> RunSpec:
        """The checkpoint directory holds what taskkit restores into it and nothing else (an
        attempt starts by making it the last sync, or empty): an input staged into it would
        be removed before the command saw it."""
        if self.checkpoint_dir is None:
            return self
        folder = os.path.normpath(self.checkpoint_dir).split(os.sep)
        for given in self.inputs:
            dest = os.path.normpath(given.dest).split(os.sep) if given.dest else []
            if dest[: len(folder)] == folder:
                raise ValueError(
                    f"input {given.source}={given.dest}: its destination is inside the "
                    f"checkpoint directory {self.checkpoint_dir!r}, which holds only the "
                    "restored checkpoint; stage it elsewhere"
                )
        return self

    @field_serializer("inputs", "outputs")
    def _as_given(
        self, value: tuple[Input | Output, ...], info: FieldSerializationInfo
    ) -> list[str]:
        return list(self._given[info.field_name])

    @property
    def input_texts(self) -> tuple[str, ...]:
        """The inputs as given (``SRC=DEST`` or a bare ``SRC``), in order."""
        return self._given["inputs"]

    @property
    def output_texts(self) -> tuple[str, ...]:
        """The outputs as given (``GLOB=DEST``), in order: what the fingerprint names."""
        return self._given["outputs"]

    @field_validator("state")
    @classmethod
    def _state(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip()
        _, sep, rest = text.partition("://")
        if not text or (sep and not rest.strip("/")):
            raise ValueError(f"{value!r} names no place (e.g. az://CONTAINER/PATH, /mnt/state)")
        if re.match(r"(?i)https?://", text):  # fsspec's HTTP filesystem only reads
            raise ValueError(
                f"{redact(public_url(text))!r}: the journal cannot be kept over http(s); "
                "give az://CONTAINER/PATH (a SAS token goes in AZURE_STORAGE_SAS_TOKEN)"
            )
        from taskkit.transfer.patterns import bad_dest_segment

        segment = bad_dest_segment(text)
        if segment is not None:  # the journal's names would hold it: refused by the service
            raise ValueError(f"{redact(public_url(text))!r} has {segment} in its path")
        if signed(text):  # it would name every journal blob, and be printed by status
            raise ValueError(f"{redact(public_url(text))!r} {SIGNED_QUERY}")
        problem = bad_url(text)
        if problem is not None:
            raise ValueError(problem)
        # A local path is made absolute now: the command (and its steps) run elsewhere.
        return text if sep else os.path.abspath(text)

    @field_validator("max_retries", mode="before")
    @classmethod
    def _a_number(cls, value: object) -> object:
        if isinstance(value, bool):  # YAML reads "yes" as true; pydantic would take it for 1
            raise ValueError(f"{value!r} is not a number of retries")
        return value

    @field_validator("jobs", "retries", mode="before")
    @classmethod
    def _a_count(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a whole number")
        return value

    @field_validator("cache_dir")
    @classmethod
    def _a_directory(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("an empty name is no directory")
        return os.path.abspath(value)  # the command runs elsewhere; so may a step

    @field_validator("checkpoint_dir")
    @classmethod
    def _below_workdir(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from taskkit.runner.checkpoint import checkpoint_dir_problem

        problem = checkpoint_dir_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("cache_max_bytes", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return None if value is None else parse_size(value)

    @field_validator("job_id", "task_id")
    @classmethod
    def _batch_id(cls, value: str | None) -> str | None:
        if value is not None and not BATCH_ID.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a Batch id (1-64 letters, digits, hyphens, underscores)"
            )
        return value

    @field_validator("success_codes", "permanent_codes", "retryable_codes", mode="before")
    @classmethod
    def _codes(cls, value: object) -> object:
        if value is None:
            return None
        try:
            return str(CodeSet.parse(value))  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    @field_validator(
        "deadline", "log_interval", "checkpoint_interval", "progress_interval", mode="before"
    )
    @classmethod
    def _duration(cls, value: object) -> object:
        return None if value is None else parse_duration(value)

    @field_validator("retry_budget", mode="before")
    @classmethod
    def _wait(cls, value: object) -> object:
        # No waiting at all is a budget too: one try per request, whatever --retries says.
        return parse_duration(value, zero=True)

    @field_validator("log_interval", "checkpoint_interval", "progress_interval")
    @classmethod
    def _not_too_often(cls, value: float) -> float:
        if value < MIN_INTERVAL:
            raise ValueError(f"{value:g} s is too often; at least {MIN_INTERVAL:g} s")
        return value

    @field_validator(*LONGEST)
    @classmethod
    def _not_too_long(cls, value: float | None, info: ValidationInfo) -> float | None:
        longest = LONGEST[str(info.field_name)]
        if value is not None and value > longest:
            why = (
                "another node calls an attempt interrupted after three, which must fit in "
                "Batch's 180-day task lifetime"
                if info.field_name == "log_interval"
                else "beyond Batch's 180-day task lifetime"
            )
            raise ValueError(f"{_shown(value)} is too long ({why}); at most {_shown(longest)}")
        return value

    def retry(self) -> RetryBudget:
        """How long each storage request of a run is tried: the journal's and the transfers'."""
        return self.transfer().retry()

    def transfer(self) -> TransferSettings:
        """The transfer settings alone."""
        return TransferSettings(*(getattr(self, name) for name in TransferSettings._fields))

    def policy(self) -> ExitPolicy:
        """The exit-code policy these settings describe."""
        return ExitPolicy.from_codes(
            success=self.success_codes,
            permanent=self.permanent_codes,
            retryable=self.retryable_codes,
        )


_PARSED = (Input, Output)


def _text(value: object) -> str:
    """An input or output as it was given; a parsed one as ``SRC=DEST``/``GLOB=DEST``."""
    if isinstance(value, _PARSED):
        return f"{value[0]}={value[1]}"
    return str(value)


def _first_error(exc: ValidationError, source: str, key_of: Mapping[str, str]) -> ConfigError:
    """One line naming the source and the key of the first thing pydantic refused."""
    error = exc.errors()[0]
    location = [str(part) for part in error["loc"]]
    field = location[0] if location else ""
    key = key_of.get(field, field)
    if error["type"] == "extra_forbidden":
        known = ", ".join(k.replace("_", "-") for k in RunSpec.model_fields)
        return ConfigError(f"{source}: unknown setting {key!r} (known: {known})")
    message = str(error["msg"]).removeprefix("Value error, ")
    shown = ".".join([key, *location[1:]])
    if not shown:  # a check of several settings together: the message names them
        return ConfigError(f"{source}: {message}")
    return ConfigError(f"{source}: {shown}: {message}")


def check_setting(name: str, value: object) -> Any:
    """``value`` as the setting ``name`` holds it, checked as a :class:`RunSpec` checks it;
    a :class:`ValueError` saying what is wrong with it otherwise."""
    try:
        spec = RunSpec.model_validate({name: value})
    except ValidationError as exc:
        raise ValueError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None
    return getattr(spec, name)


def _validated(values: Mapping[str, Any], source: str, key_of: Mapping[str, str]) -> RunSpec:
    try:
        return RunSpec.model_validate(dict(values))
    except ValidationError as exc:
        raise _first_error(exc, source, key_of) from None
    except UsageError as exc:
        # A malformed SRC=DEST or GLOB=DEST, parsed with the settings: as typed when it came
        # from the command line, else naming the file or variable it came from too.
        if source == "command line" or type(exc) is not UsageError:
            raise
        keys = [key_of.get(name, name) for name in _LISTS if name in values]
        where = f"{source}: {keys[0]}" if len(keys) == 1 else source
        raise UsageError(f"{where}: {exc.message}") from None


def load_spec_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings in a TOML, YAML or JSON file, keys as written (``max-retries`` and
    ``max_retries`` are the same key)."""
    shown = os.fspath(path)
    suffix = Path(shown).suffix.lower()
    try:
        raw = Path(shown).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the spec {shown!r}: {(exc.strerror or exc)}") from None
    try:
        if suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - the CI runs 3.11
                import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
            data: object = tomllib.loads(raw.decode("utf-8"))
        elif suffix in (".yaml", ".yml"):
            data = _load_yaml(raw.decode("utf-8"))
        elif suffix == ".json":
            data = json.loads(raw, object_pairs_hook=unique_keys)
        else:
            raise ConfigError(
                f"{shown}: unknown spec format {suffix or '(no suffix)'!r} "
                "(use .toml, .yaml, .yml or .json)"
            )
    except ConfigError:
        raise
    except Exception as exc:  # each parser has its own error classes; all mean "not parseable"
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{shown}: not valid {suffix.lstrip('.').upper()}: {detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{shown}: the spec must be a table of settings, not {type(data).__name__}"
        )
    return data


def _load_yaml(text: str) -> object:
    """YAML, refusing a key given twice (PyYAML keeps the last of two silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        keys = [loader.construct_object(k, deep=True) for k, _ in node.value]
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"the key {twice[0]!r} is given twice")
        return loader.construct_mapping(node, deep=True)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=Loader)  # a SafeLoader subclass


def unique_keys(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (json keeps the last of two silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} is given twice")
        out[key] = value
    return out


def _normalized(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Keys with ``-`` as ``_``, and the key each came from, for messages."""
    out: dict[str, Any] = {}
    key_of: dict[str, str] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in out:
            raise ConfigError(f"{key!r} and {key_of[name]!r} are the same setting: give one")
        out[name] = value
        key_of[name] = str(key)
    return out, key_of


def _from_environment(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    key_of: dict[str, str] = {}
    for name in RunSpec.model_fields:
        if name == "command":
            continue  # a command comes from the command line or the spec file
        variable = env_variable(name)
        text = environ.get(variable)
        if text is None or text == "":
            continue
        if name in _LISTS:  # one per line: a blob name may hold spaces
            values[name] = [item.strip() for item in text.splitlines() if item.strip()]
        else:
            values[name] = text
        key_of[name] = variable
    return values, key_of


def resolve(
    options: Mapping[str, Any],
    *,
    spec_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunSpec:
    """The settings of a run: ``options`` (from the command line; ``None`` values and empty
    tuples are "not given") over the environment over ``spec_file`` over the defaults."""
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    key_of: dict[str, str] = {}
    if spec_file is not None:
        shown = os.fspath(spec_file)
        try:
            values, keys = _normalized(load_spec_file(spec_file))
        except ConfigError as exc:
            if exc.message.startswith(shown):
                raise
            raise ConfigError(f"{shown}: {exc.message}") from None
        _validated(values, shown, keys)
        merged.update(values)
        key_of.update({k: f"{shown}: {v}" for k, v in keys.items()})
    values, keys = _from_environment(env)
    _validated(values, "environment", keys)
    merged.update(values)
    key_of.update(keys)
    given = {k: v for k, v in options.items() if v is not None and v != ()}
    cli_keys = {k: "--" + k.replace("_", "-") for k in given}
    _validated(given, "command line", cli_keys)
    merged.update(given)
    key_of.update(cli_keys)
    for name, variable in (("job_id", "AZ_BATCH_JOB_ID"), ("task_id", "AZ_BATCH_TASK_ID")):
        if merged.get(name) is None and env.get(variable):
            merged[name] = env[variable]
            key_of[name] = variable
    spec = _validated(merged, "settings", key_of)
    try:
        spec.policy()
    except ConfigError as exc:
        raise ConfigError(f"exit codes: {exc.message}") from None
    return spec
