"""taskkit.redaction: no credential survives into a message; ordinary text is left as it is."""

from __future__ import annotations

import base64

import pytest

from taskkit.redaction import SECRET_ENV_VARS, public_url, redact, without_credentials


@pytest.fixture(autouse=True)
def no_ambient_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials of the machine running the tests must not change what is hidden."""
    for name in SECRET_ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def test_account_key_of_a_connection_string_is_hidden() -> None:
    """AccountKey=... goes; the account name and the other fields stay."""
    text = (
        "cannot open: DefaultEndpointsProtocol=https;AccountName=acct;"
        "AccountKey=Zm9vYmFy+/c2VjcmV0==;EndpointSuffix=core.windows.net"
    )
    assert redact(text) == (
        "cannot open: DefaultEndpointsProtocol=https;AccountName=acct;"
        "AccountKey=***;EndpointSuffix=core.windows.net"
    )


def test_field_names_are_matched_in_any_case() -> None:
    """accountkey= and ACCOUNTKEY= are as secret as AccountKey=."""
    out = redact("accountkey=s3cretA ACCOUNTKEY=s3cretB")
    assert "s3cret" not in out
    assert out.count("***") == 2


def test_shared_access_signature_of_a_connection_string_is_hidden() -> None:
    """SharedAccessSignature=... goes up to the next ';', its sig included."""
    text = (
        "BlobEndpoint=https://acct.blob.core.windows.net/;"
        "SharedAccessSignature=sv=2022-11-02&ss=b&sp=rl&sig=AbCdEf%2BgH%3D;"
        "QueueEndpoint=https://acct.queue.core.windows.net/"
    )
    out = redact(text)
    assert "AbCdEf" not in out
    assert "sp=rl" not in out
    assert "SharedAccessSignature=***;" in out
    assert out.startswith("BlobEndpoint=https://acct.blob.core.windows.net/;")
    assert out.endswith(";QueueEndpoint=https://acct.queue.core.windows.net/")


def test_sig_of_a_sas_url_is_hidden_and_the_rest_kept() -> None:
    """Only the signature of a SAS query string is a secret."""
    url = (
        "https://acct.blob.core.windows.net/c/x.csv?sv=2022-11-02&se=2030-01-01&sig=AbC%2Bd%3D&sp=r"
    )
    assert redact(f"cannot read {url}: 403") == (
        "cannot read https://acct.blob.core.windows.net/c/x.csv"
        "?sv=2022-11-02&se=2030-01-01&sig=***&sp=r: 403"
    )


@pytest.mark.parametrize(
    "text",
    [
        "cannot read https://acct/c/x?sig%3DSECRETSIGNATURE",
        "cannot read https://acct/c/x?sv%3D1&sig%3dSECRETSIGNATURE&sp%3Dr",
        # A SAS URL quoted whole inside another URL: its '&' is '%26', its '?' is '%3F'.
        "redirected to https://x/login?next=https%3A%2F%2Facct%2Fc%3Fsv%3D1%26sig%3DSECRETSIGNATURE",
        "redirected to https://x/login?next=https%3A%2F%2Facct%2Fc%3Fsig%3DSECRETSIGNATURE",
    ],
    ids=["after-?", "after-&", "after-%26", "after-%3F"],
)
def test_percent_encoded_sig_is_hidden(text: str) -> None:
    """sig%3D... is hidden, also when the SAS URL is itself percent-encoded in another URL."""
    out = redact(text)
    assert "SECRETSIGNATURE" not in out
    assert out.startswith(text[: text.index("sig%3")])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AZURE_STORAGE_ACCOUNT_KEY", "c2VjcmV0LWtleS1tYXRlcmlhbA=="),
        (
            "AZURE_STORAGE_CONNECTION_STRING",
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=x",
        ),
        ("AZURE_STORAGE_SAS_TOKEN", "sv=2022-11-02&ss=b&srt=co&sp=rl&se=2030-01-01"),
    ],
)
def test_credential_environment_values_are_hidden_wherever_they_appear(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """The value of a credential variable is hidden inside any text, every time it occurs."""
    monkeypatch.setenv(name, value)
    text = f"got {value!r} then x{value}y and again {value}"
    out = redact(text)
    assert value not in out
    assert out == "got '***' then x***y and again ***"


def test_short_environment_values_do_not_blank_out_words(monkeypatch: pytest.MonkeyPatch) -> None:
    """A credential variable set to a few characters is not replaced inside ordinary words."""
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "ban")
    assert redact("a banana") == "a banana"


@pytest.mark.parametrize(
    "text",
    [
        "cannot read az://container/dir/file.csv (account acct): not found",
        "AccountName=acct;EndpointSuffix=core.windows.net",
        "design=ok signal=3 assig=1 signature=none",
        "https://acct.blob.core.windows.net/c/x?sv=2022-11-02&se=2030-01-01",
        "",
        "unicode ok: ümlaut café 数据",
    ],
)
def test_ordinary_text_is_unchanged(text: str) -> None:
    """Text holding no credential comes back exactly as it went in."""
    assert redact(text) == text


def test_the_bare_key_of_a_connection_string_in_the_environment_is_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A command printing only the account key it was given (not the whole connection
    string) still has it hidden: the secret fields of the variables are known on their own."""
    key = "c2VjcmV0a2V5LWJhc2U2NC1hY2NvdW50LWtleQ=="
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        f"DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={key};BlobEndpoint=x",
    )
    shown = redact(f"the key is {key} and the account acct")
    assert key not in shown
    assert "acct" in shown


def test_the_batch_authentication_token_is_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """AZ_BATCH_AUTHENTICATION_TOKEN is a credential Batch hands the task."""
    monkeypatch.setenv("AZ_BATCH_AUTHENTICATION_TOKEN", "eyJhbGciOiJSUzI1NiJ9.token")
    assert "eyJhbGciOiJSUzI1NiJ9" not in redact("token: eyJhbGciOiJSUzI1NiJ9.token")


# -- URLs kept without their credential, and bare account keys ------------------------------------

SAS = "se=2030-01-01T00%3A00%3A00Z&sp=r&sv=2026-10-06&sr=b&sig=AbC/dEf%2BgH%3D"


@pytest.mark.parametrize(
    ("url", "public"),
    [
        (
            f"https://acct.blob.core.windows.net/c/x.csv?{SAS}",
            "https://acct.blob.core.windows.net/c/x.csv",
        ),
        (f"http://127.0.0.1:10000/acct/c/x?{SAS}", "http://127.0.0.1:10000/acct/c/x"),
        (f"https://a/c/x?versionid=3&{SAS}#part", "https://a/c/x?versionid=3#part"),
        (f"https://a/c/x?{SAS}&snapshot=2024", "https://a/c/x?snapshot=2024"),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F&X-Amz-Signature=ab12&x=1",
            "https://b.s3.amazonaws.com/k?x=1",
        ),
        ("https://a/c/x?SIG=abc&SV=1", "https://a/c/x"),
    ],
    ids=["azure", "azurite", "other-parameters-kept", "sig-first", "s3", "any-case"],
)
def test_public_url_removes_the_token_and_keeps_the_rest(url: str, public: str) -> None:
    """A signed query loses its signature and every parameter signed with it; the other
    parameters (which select content) and the fragment stay."""
    assert public_url(url) == public
    assert public_url(public) == public


@pytest.mark.parametrize(
    "text",
    [
        "https://acct.blob.core.windows.net/c/x?sv=2022-11-02&se=2030-01-01",  # no signature
        "az://c/dir/x?y.csv",
        "/local/path?sig",
        "plain text",
    ],
)
def test_public_url_leaves_what_carries_no_signature(text: str) -> None:
    """Without a signature a query is no credential: the text comes back as it went in."""
    assert public_url(text) == text


def test_two_tokens_for_one_blob_make_one_public_url() -> None:
    """A rotated token (new expiry, new signature) names the same blob."""
    one = "https://a/c/x?sv=1&se=2030-01-01&sig=ONE%3D"
    two = "https://a/c/x?sv=1&se=2031-06-01&sp=r&sig=TWO%3D"
    assert public_url(one) == public_url(two)


def test_without_credentials_cleans_every_url_in_a_text() -> None:
    """Each URL inside a command-line argument has the values of its token masked; the text
    around it stays, and other credentials are hidden as redact hides them."""
    text = f"--in=https://a/c/x?{SAS} --out='http://b/y?{SAS}' AccountKey=k3y"
    masked = "&".join(f"{item.split('=')[0]}=***" for item in SAS.split("&"))
    assert without_credentials(text) == (
        f"--in=https://a/c/x?{masked} --out='http://b/y?{masked}' AccountKey=***"
    )


@pytest.mark.parametrize(
    ("one", "two"),
    [
        ("echo http://h/x?sig=abc;touch f", "echo http://h/x?sig=abc;rm f"),
        ("curl 'https://a/c/x?sv=1&sig=A'|sh", "curl 'https://a/c/x?sv=1&sig=A'|bash"),
        ("get https://a/c/x?sig=A&&run 1", "get https://a/c/x?sig=A&&run 2"),
        ("f(https://a/c/x?sig=A) 1", "f(https://a/c/x?sig=A) 2"),
    ],
)
def test_texts_that_differ_outside_the_token_still_differ(one: str, two: str) -> None:
    """Only the token's values are masked: what follows a signed URL in the same word (a
    shell's ';', '|', '&&', ')') is kept, so two commands that differ there stay two."""
    assert without_credentials(one) != without_credentials(two)
    assert "sig=***" in without_credentials(one)


def test_a_rotated_token_in_a_text_reads_the_same() -> None:
    """Every parameter of a SAS is masked (expiry, start, permissions, signature), so the
    same command with a rotated token is the same text; other parameters are kept."""
    one = "cp 'https://a/c/x?sv=1&se=2030-01-01T00:00:00Z&sig=ONE%3D&snapshot=5' ."
    two = "cp 'https://a/c/x?sv=1&se=2031-06-01T00:00:00Z&sig=TWO%3D&snapshot=5' ."
    assert without_credentials(one) == without_credentials(two)
    assert "snapshot=5" in without_credentials(one)
    assert "ONE" not in without_credentials(one)


def test_the_character_after_a_signature_is_kept() -> None:
    """A signature ends where its characters end: a ':' or ')' after it is the message's."""
    assert redact("cannot read https://a/c/x?sig=AbC%3D: 403 ('sig=XyZ=')") == (
        "cannot read https://a/c/x?sig=***: 403 ('sig=***')"
    )


@pytest.mark.parametrize("name", ["X-Amz-Signature", "x-goog-signature", "X-Amz-Security-Token"])
def test_signatures_of_other_clouds_are_hidden(name: str) -> None:
    """S3 and GCS signed URLs carry their credential in these parameters."""
    assert "SECRETVALUE" not in redact(f"GET https://b/k?{name}=SECRETVALUE&x=1")


def test_a_bare_account_key_is_hidden_whoever_it_belongs_to() -> None:
    """88 base64 characters ending in '==' are an account key, configured or not: hidden
    alone, after '=', in quotes; the text around it stays."""
    key = base64.b64encode(bytes(range(64))).decode()
    assert len(key) == 88
    assert key.endswith("==")
    for shown in (f"key {key} end", f"KEY={key}", f"'{key}'", key, f"{key}\n{key}\n"):
        out = redact(shown)
        assert key not in out
        assert out == shown.replace(key, "***")


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(bytes(range(65))).decode(),  # 65 bytes: longer base64, not a key
        "x" + base64.b64encode(bytes(range(64))).decode(),  # inside a longer run
        base64.b64encode(bytes(range(63))).decode(),  # 84 characters
        "a" * 86 + "==" + "=",
    ],
    ids=["65-bytes", "inside-a-run", "63-bytes", "three-equals"],
)
def test_base64_that_is_not_an_account_key_is_kept(text: str) -> None:
    """Only a run of exactly 88 base64 characters ending in '==' is taken for a key."""
    assert redact(text) == text
