"""taskkit.redaction: no credential survives into a message; ordinary text is left as it is."""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
from collections.abc import Callable

import pytest

from taskkit.redaction import (
    SECRET_ENV_VARS,
    public_url,
    redact,
    shown_url,
    signed,
    without_credentials,
)


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


# -- passwords in a URL's userinfo ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("GET http://user:hunter2pw@h:8080/c/x", "GET http://user:***@h:8080/c/x"),
        ("'https://u:p4ss@h/x?a=1'", "'https://u:***@h/x?a=1'"),
        ("redis://:hunter2pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("az://u:hunter2pw@acct/c/x", "az://u:***@acct/c/x"),
        ("http://u:hunter2%40pw@h/x", "http://u:***@h/x"),  # '@' encoded in the password
        ("http://u:hunter2@pw@h/x", "http://u:***@h/x"),  # up to the last '@', as parsed
        ("http://a@b:hunter2pw@h/x", "http://a@b:***@h/x"),  # the user ends at the first ':'
        ("a http://u:one@h/x b ftp://v:two@g/y", "a http://u:***@h/x b ftp://v:***@g/y"),
    ],
    ids=["http", "quoted", "no-user", "az", "encoded-at", "raw-at", "at-in-user", "two"],
)
def test_a_password_in_a_urls_userinfo_is_hidden(text: str, shown: str) -> None:
    """scheme://user:PASSWORD@ shows as user:***@, wherever the URL stands in the text."""
    assert redact(text) == shown
    assert redact(shown) == shown


@pytest.mark.parametrize(
    "text",
    [
        "abfs://container@account.dfs.core.windows.net/dir/x",  # a container, no password
        "abfs://container@account.dfs.core.windows.net:443/dir/x",
        "https://user@h/x",
        "http://h:8080/x?next=a@b",
        "http://[::1]:8080/x",
        "ssh://git@github.com:22/org/repo",
        "mail me at user:name@example.com",  # no '://'
        "http://h:8080/x user@example.com",
    ],
)
def test_userinfo_without_a_password_is_kept(text: str) -> None:
    """Only a userinfo with ':' holds a password: a container, a user alone, a port and an
    '@' elsewhere are left as they are, by redact and by public_url."""
    assert redact(text) == text
    if "://" in text and " " not in text:
        assert public_url(text) == text


@pytest.mark.parametrize(
    ("url", "public", "shown"),
    [
        (
            "http://user:hunter2pw@127.0.0.1:9/acct/c/x?" + SAS,
            "http://user@127.0.0.1:9/acct/c/x",
            "http://user:***@127.0.0.1:9/acct/c/x",
        ),
        (
            "https://u:pw@h/x?snapshot=1#f",
            "https://u@h/x?snapshot=1#f",
            "https://u:***@h/x?snapshot=1#f",
        ),
        ("redis://:pw@h:1/0", "redis://h:1/0", "redis://:***@h:1/0"),
    ],
    ids=["with-sas", "other-parameters", "no-user"],
)
def test_public_url_drops_the_password_and_shown_url_masks_it(
    url: str, public: str, shown: str
) -> None:
    """What is kept or keyed on has no password (the user stays); what is printed says a
    password was given (user:***@); neither has the token."""
    assert public_url(url) == public
    assert public_url(public) == public
    assert shown_url(url) == shown
    assert shown_url(shown) == shown


def test_a_rotated_password_reads_the_same_source() -> None:
    """Two passwords for one URL: one public URL, one shown URL, one command-line text."""
    one, two = "https://u:first1@h/c/x?" + SAS, "https://u:second2@h/c/x"
    assert public_url(one) == public_url(two) == "https://u@h/c/x"
    assert shown_url(one) == shown_url(two)
    assert without_credentials(f"cp {one} .") == without_credentials(f"cp {two}?{SAS} .")
    assert "first1" not in without_credentials(f"cp {one} .")


def test_a_password_is_no_query_token() -> None:
    """signed() is about the query string: a password alone does not make a URL signed (its
    refusal names AZURE_STORAGE_SAS_TOKEN)."""
    assert not signed("az://u:pw@acct/c/x")
    assert signed("az://c/x?sv=1&sig=abc")


# -- signatures and keys in less usual spellings --------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "env AZ_BATCH_SOMETHING=sig=aFbYyqBUEqcmFpd",
        "X=sig=aFbYyqBUEqcmFpd",
        "(sig=aFbYyqBUEqcmFpd)",
        "token:sig=aFbYyqBUEqcmFpd",
        "sig=aFbYyqBUEqcmFpd",
        "next=https%3A%2F%2Fa%2Fc%3Fsv%3D1%2Csig%3DaFbYyqBUEqcmFpd",  # after an encoded ','
        "--token=x-amz-signature=aFbYyqBUEqcmFpd",
    ],
    ids=["setting", "bare-setting", "parenthesis", "colon", "alone", "after-%2C", "s3"],
)
def test_a_signature_is_hidden_whatever_stands_before_it(text: str) -> None:
    """sig= is a signature wherever it starts a word: after '=', '(', ':', an encoded
    separator, not only after '?', '&' or a space."""
    out = redact(text)
    assert "aFbYyqBUEqcmFpd" not in out
    assert out.endswith("=***") or out.endswith("=***)")


@pytest.mark.parametrize("text", ["assig=1", "my-sig=ok", "design_sig=ok", "prefix.nosig=ok"])
def test_a_name_ending_in_sig_is_no_signature(text: str) -> None:
    """sig= at the end of a longer name is ordinary text."""
    assert redact(text) == text


def _key_with(plus_and_slash: bool) -> str:
    """An account key: with both '+' and '/' in it (the characters URL-encoding changes) or
    with neither."""
    for n in range(1000):
        key = base64.b64encode(hashlib.sha512(str(n).encode()).digest()).decode()
        if plus_and_slash and "+" in key and "/" in key:
            return key
        if not plus_and_slash and "+" not in key and "/" not in key:
            return key
    raise AssertionError("no such key")


@pytest.mark.parametrize("plus_and_slash", [False, True], ids=["plain-body", "encoded-body"])
@pytest.mark.parametrize(
    "encode",
    [
        lambda k: urllib.parse.quote(k, safe=""),
        lambda k: urllib.parse.quote(k, safe="").lower(),
        urllib.parse.quote,  # '/' left as it is
        lambda k: k.replace("==", "%3D%3D"),
        lambda k: urllib.parse.quote(k[:-2], safe="") + "==",
    ],
    ids=["quote", "lowercase-escapes", "slash-kept", "padding-only", "body-only"],
)
def test_a_url_encoded_account_key_is_hidden(
    encode: Callable[[str], str], plus_and_slash: bool
) -> None:
    """An account key written URL-encoded ('%2B', '%2F', '%3D%3D', any case) is hidden like
    a plain one, alone or in a query; the text around it stays."""
    key = encode(_key_with(plus_and_slash))
    for text in (key, f"AccountKey%3D{key}%3BEndpoint", f"?key={key}&x=1", f"'{key}'"):
        assert redact(text) == text.replace(key, "***")


@pytest.mark.parametrize(
    "text",
    [
        "x" + urllib.parse.quote(_key_with(True), safe=""),  # inside a longer run
        "%2B" + urllib.parse.quote(_key_with(True), safe=""),
        urllib.parse.quote(_key_with(True), safe="") + "%3D",  # three '='
        urllib.parse.quote(_key_with(True)[1:], safe=""),  # 85 characters
        "%3D%3D%3D%3D",
    ],
    ids=["inside-a-run", "after-encoded-plus", "three-equals", "85-characters", "padding-alone"],
)
def test_url_encoded_base64_that_is_not_an_account_key_is_kept(text: str) -> None:
    """Encoded or not, only exactly 86 base64 characters and their '==' are a key."""
    assert redact(text) == text
