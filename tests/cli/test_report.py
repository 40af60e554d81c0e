"""taskkit.cli.report: every line it writes leaves without a credential, whatever it quotes."""

from __future__ import annotations

import pytest

from taskkit.cli.report import echo, say


def test_say_and_echo_redact_what_they_print(capsys: pytest.CaptureFixture[str]) -> None:
    """A warning on stderr and a plan line on stdout that quote a SAS URL show no signature."""
    say("warning", "cannot read https://a/c/x?sv=1&sig=U0VDUkVU%3D; trying again")
    echo("download https://a/c/x?sv=1&sig=U0VDUkVU%3D -> x")
    out, err = capsys.readouterr()
    assert "U0VDUkVU" not in out + err
    assert err == "taskkit: warning: cannot read https://a/c/x?sv=1&sig=***; trying again\n"
    assert out == "download https://a/c/x?sv=1&sig=*** -> x\n"
