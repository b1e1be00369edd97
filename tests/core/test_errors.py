"""Errors carry their own hint; the message stays one line."""

from __future__ import annotations

from assay.core.errors import AssayError, ConfigError, NotInitialisedError, RefusedError


def test_message_is_one_line_and_hint_is_optional():
    exc = AssayError("two\n  lines")
    assert str(exc) == "two lines" and exc.hint is None
    assert RefusedError("no", hint="ask\nan admin").hint == "ask an admin"


def test_class_hint_is_the_default_and_an_instance_may_replace_it():
    exc = NotInitialisedError("assay is not initialised in /x: run `assay init`")
    assert isinstance(exc, ConfigError) and exc.exit_code == 1
    assert exc.hint is not None and "assay init" in exc.hint
    assert NotInitialisedError("m", hint="other").hint == "other"
    assert NotInitialisedError.hint == exc.hint  # the instance did not change the class
