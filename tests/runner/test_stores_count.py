"""One ``taskkit run`` attempt opens one :class:`~taskkit.storage.stores.Stores` and hands it down.

The attempts run in this process (the CLI through :func:`runner_helpers.invoke`, or
:func:`taskkit.runner.run.run`), so every Stores the attempt opens is counted; a ``taskkit step``
inside the command is another process, with its own. Counted with :mod:`store_counts`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import SH_TASKKIT, Task, invoke, opened_task, q, sh
from store_counts import counting_stores

import taskkit.runner.checkpoint
from taskkit.observer import NullObserver
from taskkit.runner.run import run
from taskkit.runner.spec import RunSpec
from taskkit.storage.retry import RetryBudget
from taskkit.storage.stores import Stores
from taskkit.testing import Azurite
from taskkit.transfer.upload_plan import MANIFEST_NAME


@pytest.fixture
def task(tmp_path: Path) -> Iterator[Task]:
    with opened_task(tmp_path) as opened:
        yield opened


def _syncs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The ``stores`` each checkpoint sync's upload is given, one per sync that uploads."""
    given: list[Any] = []
    real = taskkit.runner.checkpoint.upload

    def upload(*args: Any, **kwargs: Any) -> Any:
        given.append(kwargs.get("stores"))
        return real(*args, **kwargs)

    monkeypatch.setattr(taskkit.runner.checkpoint, "upload", upload)
    return given


def _command(task: Task, synced: Path, steps: Path) -> list[str]:
    """A step (its own process), the staged input copied to the output, and in attempt 1 a
    checkpoint file synced while the command waits, then a second one, then exit 3
    (retryable); attempt 2 finds both restored, adds a third and succeeds."""
    return sh(
        f"{SH_TASKKIT} step s1 -o {q(f'o.txt=file://{steps}/')} -- sh -c 'echo step > o.txt'\n"
        "cp in.txt out.txt\n"
        'ck="$TASKKIT_CHECKPOINT_DIR"\n'
        'if [ "$TASKKIT_ATTEMPT" = 1 ]; then\n'
        '  echo one > "$ck/one"\n'
        # Bounded: the periodic sync comes every 0.2 s; 20 s without one fails the test.
        f"  n=0; while [ ! -e {q(synced)} ]; do\n"
        "    n=$((n+1)); [ $n -lt 1000 ] || exit 9; sleep 0.02\n"
        "  done\n"
        '  echo two > "$ck/two"\n'
        "  exit 3\n"
        "fi\n"
        # A change, so that attempt 2 syncs too (a restored folder left as it is needs none).
        'test -f "$ck/one" && test -f "$ck/two" && echo three > "$ck/three"\n'
    )


def test_one_attempt_opens_one_stores_for_everything(
    task: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each of two attempts (inputs staged, a step inside, a checkpoint synced twice and more,
    then restored, outputs uploaded) opens exactly one Stores, closed exactly once, and every
    checkpoint sync goes through it."""
    source = task.root / "data" / "in.txt"
    source.parent.mkdir()
    source.write_text("input\n")
    results, steps = task.root / "results", task.root / "steps"
    synced = task.journal / "checkpoint" / "00001" / "a" / MANIFEST_NAME  # attempt 1's first sync
    args = task.args(
        _command(task, synced, steps),
        *("-i", f"file://{source}=in.txt", "-o", f"out.txt=file://{results}/"),
        *("--checkpoint-interval", "0.2s", "--log-interval", "0.2s", "--max-retries", "1"),
    )
    counts = counting_stores(monkeypatch)
    syncs = _syncs(monkeypatch)

    code, _, stderr = invoke(args, env=task.env)
    assert code == 3, stderr
    assert len(counts.opened) == 1, counts.opened
    assert counts.closed_once_each(), counts.closes
    assert counts.users() == {id(counts.opened[0])}
    assert len(syncs) >= 2, syncs  # a periodic sync, and the one when the command ended
    assert all(given is counts.opened[0] for given in syncs), syncs
    assert (steps / "o.txt").read_text() == "step\n"  # the step ran, in its own process

    counts.reset()
    syncs.clear()
    code, _, stderr = invoke(args, env=task.env)
    assert code == 0, stderr
    assert "restored 2 checkpoint files" in stderr
    assert "step s1: done in attempt 1, skipped" in task.log(2, "stderr")  # the command's
    assert (results / "out.txt").read_text() == "input\n"
    assert len(counts.opened) == 1, counts.opened
    assert counts.closed_once_each(), counts.closes
    assert counts.users() == {id(counts.opened[0])}
    assert syncs, "the checkpoint was not synced"
    assert all(given is counts.opened[0] for given in syncs), syncs
    # Attempt 1 ended: once attempt 2 had a sync of its own, attempt 1's folder went.
    checkpoint = task.journal / "checkpoint"
    assert not list((checkpoint / "00001").rglob("*.*"))
    assert list((checkpoint / "00002").rglob(MANIFEST_NAME))


def test_a_dry_run_opens_one_stores(task: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    """--dry-run plans the staging through the Stores it reads the journal with."""
    source = task.root / "data" / "in.txt"
    source.parent.mkdir()
    source.write_text("input\n")
    args = task.args(
        ["true"],
        *("-i", f"file://{source}=in.txt", "-o", f"out.txt=file://{task.root}/results/"),
        "--dry-run",
    )
    counts = counting_stores(monkeypatch)
    code, stdout, stderr = invoke(args, env=task.env)
    assert code == 0, stderr
    assert "inputs" in stdout
    assert len(counts.opened) == 1, counts.opened
    assert counts.closed_once_each(), counts.closes


def test_run_uses_the_stores_it_is_given_and_leaves_them_open(
    task: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run(stores=...) opens none of its own, makes every request through the given Stores,
    and does not close it: the caller's to close."""
    for name in [n for n in os.environ if n.startswith(("TASKKIT_", "AZ_BATCH_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TASKKIT_CACHE_DIR", str(task.root / "cache"))
    source = task.root / "data" / "in.txt"
    source.parent.mkdir()
    source.write_text("input\n")
    spec = RunSpec.model_validate(
        {
            "command": ["cp", "in.txt", "out.txt"],
            "state": task.state,
            "job_id": task.job,
            "task_id": task.task,
            "workdir": str(task.workdir),
            "inputs": [f"file://{source}=in.txt"],
            "outputs": [f"out.txt=file://{task.root}/results/"],
        }
    )
    with Stores(RetryBudget(attempts=1)) as mine:
        counts = counting_stores(monkeypatch)
        assert run(spec, environ={}, observer=NullObserver(), stores=mine) == 0
        assert counts.opened == []
        assert counts.users() == {id(mine)}
        assert counts.closes[id(mine)] == 0
        store, _ = mine.open(f"file://{task.root}/results/out.txt")  # still usable
        assert store.load(str(task.root / "results" / "out.txt")) is not None
    assert (task.root / "results" / "out.txt").read_text() == "input\n"


@pytest.mark.azurite
def test_one_attempt_against_azurite_makes_one_client_for_the_account(
    azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """State, input, output and checkpoint in containers of one account: the attempt makes
    one AzureStore (one SDK client) and closes it once."""
    from taskkit.storage.azure import AzureStore

    tag = uuid.uuid4().hex[:12]
    state, data, out = (f"tk-{role}-{tag}" for role in ("state", "data", "out"))
    with azurite.blob_service_client() as service:
        for name in (state, data, out):
            service.create_container(name)
        service.get_blob_client(data, "in.txt").upload_blob(b"input\n")
        try:
            with opened_task(tmp_path) as task:
                made: list[AzureStore] = []
                closed: list[AzureStore] = []
                real_init, real_close = AzureStore.__init__, AzureStore.close

                def init(self: AzureStore, *args: Any, **kwargs: Any) -> None:
                    real_init(self, *args, **kwargs)
                    made.append(self)

                def close(self: AzureStore) -> None:
                    closed.append(self)
                    real_close(self)

                monkeypatch.setattr(AzureStore, "__init__", init)
                monkeypatch.setattr(AzureStore, "close", close)
                command = sh('cp in.txt out.txt; echo k > "$TASKKIT_CHECKPOINT_DIR/k"')
                args = [
                    "run",
                    *("--state", f"az://{state}/runs", "--job-id", "job", "--task-id", "t"),
                    *("--workdir", str(task.workdir)),
                    *("-i", f"az://{data}/in.txt=in.txt", "-o", f"out.txt=az://{out}/r/"),
                    "--",
                    *command,
                ]
                env = {**task.env, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
                code, _, stderr = invoke(args, env=env)
                assert code == 0, stderr
                assert len(made) == 1, made
                assert closed == made
                names = {b.name for b in service.get_container_client(out).list_blobs()}
                assert names == {"r/out.txt", f"r/{MANIFEST_NAME}"}
                ck = {
                    b.name
                    for b in service.get_container_client(state).list_blobs()
                    if "/checkpoint/" in b.name
                }
                assert ck, "the checkpoint was not synced to the account"
        finally:
            for name in (state, data, out):
                service.delete_container(name)
