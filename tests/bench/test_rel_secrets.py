"""R5 secrets (bench/rel_secrets.py): at its CI size no credential of any form is printed or
stored anywhere, and its search finds a credential wherever and however it is written."""

from __future__ import annotations

import base64
import os
import sys
import urllib.parse
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import rel_secrets

from taskkit.testing import Azurite

KEY = base64.b64encode(bytes(range(7, 71))).decode()
SAS = (
    "sv=2024-11-04&ss=b&srt=sco&sp=rl&se=2030-01-01T00%3A00%3A00Z"
    "&sig=QUJD%2BZGVm%2FR0aGlzaXNhc2lnbmF0dXJl%3D"
)
CONN = f"AccountName=acct;AccountKey={KEY};BlobEndpoint=http://h/acct;"


def planted() -> list[rel_secrets.Secret]:
    return rel_secrets.secrets_of(CONN, KEY, SAS)


@pytest.mark.azurite
def test_no_credential_of_any_form_is_printed_or_stored(tmp_path: Path) -> None:
    """Every flow of every credential form runs as expected, and the search of every output,
    file and blob finds none of the credentials."""
    result = rel_secrets.suite("ci", tmp_path)
    assert result["problems"] == []
    assert result["name"] == "R5 secrets"
    rows = dict(result["rows"])  # type: ignore[arg-type]
    assert rows["hits (target 0)"] == "0"


def test_every_spelling_of_every_secret_is_found_in_a_file_a_name_and_a_text(
    tmp_path: Path,
) -> None:
    """Each secret, as is, percent-encoded once or twice, or cut to a run of its letters, is
    found in a file's bytes, in a file's name and in a command's output; a problem names the
    place and never holds the secret."""
    for secret in planted():
        for n, form in enumerate(sorted(rel_secrets.spellings(secret.value, secret.runs))):
            folder = tmp_path / f"{secret.label}-{n}"
            folder.mkdir()
            (folder / "journal.json").write_text(f'{{"reason": "x {form} y"}}')
            scan = rel_secrets.Scan()
            scan.tree(folder, [secret])
            scan.text("the stderr of a command", f"note: {form}\n", [secret])
            assert scan.hits == [f"{secret.label} in the file journal.json",
                                 f"{secret.label} in the stderr of a command"]  # fmt: skip
            if "/" not in form and len(form) < 200:
                (folder / form).write_bytes(b"")
                named = rel_secrets.Scan()
                named.tree(folder, [secret])
                assert f"{secret.label} in the name {form}" in named.hits
                texts = [rel_secrets.hidden(hit, planted()) for hit in named.hits]
                assert not any(form in text for text in texts)


def test_a_clean_tree_and_look_alikes_are_not_hits(tmp_path: Path) -> None:
    """Text that only resembles a credential (another key, the account name, a signature's
    parameter names) is no hit: the search looks for these very values."""
    other = base64.b64encode(os.urandom(64)).decode()
    (tmp_path / "a.txt").write_text(f"AccountName=acct;AccountKey={other}; sig=*** sv=2024-11-04")
    scan = rel_secrets.Scan()
    scan.tree(tmp_path, planted())
    assert scan.hits == []
    assert (scan.files, scan.scanned) == (1, len((tmp_path / "a.txt").read_bytes()) + len("a.txt"))


@pytest.mark.azurite
def test_a_secret_in_a_blobs_name_metadata_or_bytes_is_found(
    azurite: Azurite, azurite_container: str
) -> None:
    """The search of the containers reads every blob's name, metadata and bytes."""
    secrets = planted()
    signature = urllib.parse.quote(urllib.parse.parse_qs(SAS)["sig"][0], safe="")
    with azurite.blob_service_client() as service:
        container = service.get_container_client(azurite_container)
        container.upload_blob("logs/stderr.txt", f"key {KEY}\n".encode())
        container.upload_blob("m.json", b"{}", metadata={"note": signature})
        container.upload_blob(f"x-{signature}", b"")
        container.upload_blob("clean.txt", b"nothing here")
    scan = rel_secrets.Scan()
    scan.containers(azurite, secrets)
    where = f"az://{azurite_container}"
    assert set(scan.hits) == {
        f"the account key in the blob {where}/logs/stderr.txt",
        f"the SAS signature in the metadata of {where}/m.json",
        f"the SAS signature in the blob name {where}/x-{signature}",
    }
    assert scan.blobs >= 4
