"""What a call moves: its inputs staged before the function runs, its outputs published after.

Both go through the transfer wing as ``taskkit stage`` and ``taskkit upload`` do, heard by the
call's observer without their plans: a call says in one line what it staged and what it
published. Inputs are staged into the call's own folder (one per key, removed when the call
succeeds; a node cache, when there is one, saves the downloads of calls on the same inputs).
Outputs are published from the current directory under the call's
claim: the upload's fence reads the claim before each manifest is written, so a call that lost
its claim never publishes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from taskkit.exceptions import InputNotFound, TransientError
from taskkit.observer import NullObserver, Observer, Progress
from taskkit.redaction import shown_url
from taskkit.runner.journal import Journal, PublishedManifest, Version
from taskkit.storage.stores import Stores
from taskkit.transfer.summary import Summary

__all__ = ["publish_outputs", "stage_inputs"]


class _Quiet(NullObserver):
    """A call's staging or upload, heard by the call's observer: its warnings and progress,
    not its plan (the call says in one line what it moved) nor its problems (the first is
    what the call raises: said once, by whoever catches it)."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def warning(self, text: str) -> None:
        self.observer.warning(text)

    def progress(self, progress: Progress) -> None:
        self.observer.progress(progress)


def stage_inputs(
    inputs: Mapping[str, str],
    folder: Path,
    *,
    name: str,
    stores: Stores,
    observer: Observer,
    environ: Mapping[str, str],
) -> tuple[dict[str, Path], Summary]:
    """Stage ``inputs`` (name -> URL) below ``folder`` (the call's own: nothing another call
    left there is seen); the path of each, and the summary (the caller checks its errors)."""
    from taskkit.transfer.stage import stage
    from taskkit.transfer.stage_plan import Input

    where = folder
    summary = stage(
        [Input(url, input_name) for input_name, url in sorted(inputs.items())],
        workdir=where,
        stores=stores,
        observer=_Quiet(observer),
        environ=environ,
    )
    if summary.exit_error() is None and summary.transferred:
        observer.note(
            f"{name}: staged {summary.transferred} of {summary.files} input files into {where}"
        )
    return {input_name: where / input_name for input_name in inputs}, summary


def publish_outputs(
    output_texts: tuple[str, ...],
    *,
    name: str,
    task: Mapping[str, str | int],
    journal: Journal,
    number: int,
    held: Version,
    stores: Stores,
    observer: Observer,
    environ: Mapping[str, str],
    allow_empty: bool = False,
) -> tuple[PublishedManifest, ...]:
    """Upload and publish ``output_texts`` (``GLOB=DEST``) from the current directory under the
    claim at ``held``; the journal's copies of the manifests, for the success record."""
    if not output_texts:
        return ()
    from taskkit.runner.published import destinations, recorded
    from taskkit.transfer.patterns import parse_output
    from taskkit.transfer.upload import upload

    outputs = [parse_output(text) for text in output_texts]
    summary = upload(
        outputs,
        workdir=os.getcwd(),
        stores=stores,
        task=task,
        observer=_Quiet(observer),
        environ=environ,
        fence=lambda: _still_held(journal, held),
        allow_empty=allow_empty,
    )
    error = summary.exit_error()
    if isinstance(error, InputNotFound) and "--allow-empty" in error.message:
        # The command line's advice, in the words of a task's option.
        error = InputNotFound(
            error.message.replace("use --allow-empty", "give the task allow_empty=True")
        )
    if error is not None:
        raise error
    dests = ", ".join(sorted({shown_url(o.dest) for o in outputs}))
    observer.note(
        f"{name}: published {summary.files} output files to {dests} ({summary.transferred} sent)"
    )
    return recorded(journal, number, destinations(stores, outputs), summary.published)


def _still_held(journal: Journal, version: Version) -> None:
    """The upload's fence: the claim written at ``version`` is still this call's."""
    found = journal.outcome()
    if found is not None and found[1] == version:
        return
    raise TransientError("lost the claim to another call")
