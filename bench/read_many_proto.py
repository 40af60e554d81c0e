"""Prototype behind the proposal of an async batch read (``Store.read_many``): is the hop from
a worker thread to the I/O loop, once per small file, worth removing?

Two ways to fetch every blob of a prefix whole and write each to a partial file renamed into
place (the small-file path of ``taskkit stage``), each a whole process, taking turns, medians
of ``--runs``:

* ``threads``: today's shape. J worker threads, each ``store.read(file, 0, size)`` (one hop to
  fsspec's I/O loop and back per file), then open a new partial, one write, one rename;
* ``batch``: ``read_many(files, J)`` below: one call starts every GET on the loop under one
  ``asyncio.Semaphore(J)`` and hands each body over as it lands through a ``SimpleQueue`` to
  the calling thread, which writes the partial and renames it. A GET that failed is read again
  through ``store.read`` (taskkit's retries and error translation).

Starts its own Azurite and seeds ``--count`` blobs of ``--size`` bytes.

Run: ``.venv/bin/python bench/read_many_proto.py [--count 2000] [--size 65536] [--jobs 32]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from taskkit.storage.azure import AzureStore
from taskkit.storage.base import RemoteFile
from taskkit.storage.stores import Stores
from taskkit.testing import Azurite, find_azurite

REPO = Path(__file__).resolve().parent.parent
CONTAINER = "proto"


def read_many(
    store: AzureStore, files: Sequence[RemoteFile], jobs: int
) -> Iterator[tuple[RemoteFile, bytes]]:
    """Every file whole, ``jobs`` GETs in flight on the I/O loop, yielded as they land."""
    landed: queue.SimpleQueue[tuple[RemoteFile, bytes | BaseException]] = queue.SimpleQueue()

    async def run() -> None:
        slots = asyncio.Semaphore(jobs)

        async def one(file: RemoteFile) -> None:
            async with slots:
                try:
                    data: bytes | BaseException = await store._download(file, 0, file.size)
                except Exception as exc:  # read again below, through the retries
                    data = exc
            landed.put((file, data))

        await asyncio.gather(*(one(f) for f in files))

    started = asyncio.run_coroutine_threadsafe(run(), store._loop)
    for _ in files:
        file, data = landed.get()
        if isinstance(data, BaseException) or len(data) != file.size:
            data = store.read(file, 0, file.size)
        yield file, data
    started.result()


def write(out: str, file: RemoteFile, data: bytes) -> None:
    final = os.path.join(out, file.key.rpartition("/")[2])
    partial = final + ".partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(partial, final)


def child(mode: str, conn: str, out: str, jobs: int) -> None:
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = conn
    with Stores() as stores:
        store, key = stores.open(f"az://{CONTAINER}/data/")
        assert isinstance(store, AzureStore)
        files = store.list(key)
        if mode == "threads":

            def one(file: RemoteFile) -> None:
                write(out, file, store.read(file, 0, file.size))

            with ThreadPoolExecutor(jobs) as pool:
                list(pool.map(one, files))
        else:
            for file, data in read_many(store, files, jobs):
                write(out, file, data)
    if len(os.listdir(out)) != len(files):
        raise SystemExit(f"{mode}: {len(os.listdir(out))} files written, not {len(files)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, conn, out, jobs = args.child
        child(mode, conn, out, int(jobs))
        return
    with Azurite(find_azurite(cwd=REPO)) as az, tempfile.TemporaryDirectory() as scratch:
        with az.blob_service_client() as service:
            container = service.get_container_client(CONTAINER)
            container.create_container()
            names = [f"data/f{i:05d}.bin" for i in range(args.count)]
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda n: container.upload_blob(n, os.urandom(args.size)), names))
        seen: dict[str, list[tuple[float, float]]] = {"threads": [], "batch": []}
        for _ in range(args.runs):
            for mode, runs in seen.items():
                out = os.path.join(scratch, mode)
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(out)
                argv = [sys.executable, __file__, "--child", mode, az.connection_string, out,
                        str(args.jobs)]  # fmt: skip
                start = time.perf_counter()
                proc = subprocess.Popen(argv)
                _, status, usage = os.wait4(proc.pid, 0)
                wall = time.perf_counter() - start
                if status:
                    raise SystemExit(f"{mode} failed")
                runs.append((wall, usage.ru_utime + usage.ru_stime))
        print(f"{args.count} x {args.size} B, J = {args.jobs}, {args.runs} runs each")
        for mode, runs in seen.items():
            walls = " ".join(f"{w:.2f}" for w, _ in runs)
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"  {mode:8} wall median {wall:6.2f} s   CPU median {cpu:5.2f} s   walls {walls}")


if __name__ == "__main__":
    main()
