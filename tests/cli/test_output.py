"""What the CLI prints for people: untrusted text is never taken as rich markup (D9: a bundle's
key hint ``[/]``, playbook messages), and tables never cut states, versions or aliases (CI logs
are not a terminal; rich would cut them to 80 columns: ``known-go…``, ``producti…``)."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.cli import context
from assay.cli.common import esc, styled
from assay.cli.context import PlainConsole, new_table, plain_text

HOSTILE = ["[/]", "[bold red]boom[/]", "[link=file:///etc/passwd]x[/link]", "a\\", "\\[/]", "[@x]"]
MARKUP_ALPHABET = st.sampled_from(list("[]/\\@#=abz ") + ["[/]", "[b]", "[red]", "\\["])


def _rich(width: int = 60):
    from rich.console import Console

    return Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.lists(MARKUP_ALPHABET, max_size=12).map("".join)))
def test_esc_is_read_back_literally_by_rich_and_by_the_plain_console(text: str) -> None:
    from rich.control import strip_control_codes
    from rich.markup import escape, render

    if not text.endswith("\\\\\\"):  # rich's escape misses a trailing run of 3+ backslashes
        assert esc(text) == escape(text)  # the same escaping as rich's, without importing rich
    shown = render(f"[bold]{esc(text)}[/bold] tail")  # never a MarkupError
    # No tag gets in or out: one bold span, closed before the tail.
    assert [(s.start, s.end, str(s.style)) for s in shown.spans] in (
        [],
        [(0, len(shown.plain) - len(" tail"), "bold")],
    )
    assert shown.plain.endswith(" tail")
    if "\\" not in text:  # (rich reads backslashes before brackets its own way)
        assert shown.plain == strip_control_codes(f"{text} tail")
        # the plain console reads it back the same (rich also drops a few control codes)
        assert strip_control_codes(plain_text(f"[bold]{esc(text)}[/bold] tail")) == shown.plain


@pytest.mark.parametrize("text", HOSTILE)
def test_table_cells_are_text_unless_styled(text: str) -> None:
    for console in (PlainConsole(), _rich(120)):
        table = new_table(console, "name", "state")
        table.add_row(text, styled("[green]known-good[/green]"))
        if isinstance(console, PlainConsole):
            lines = table.lines()
            assert lines[1].startswith(text) and lines[1].endswith("known-good")
        else:
            console.print(table)
            out = console.file.getvalue()
            assert text.rstrip("\\") in out and "known-good" in out and "[green]" not in out


def test_plain_tables_are_never_cut_and_rich_ones_fold() -> None:
    long_state, long_alias = "known-good", "production-" + "x" * 90
    plain = new_table(PlainConsole(), "version", "state", "serving")
    plain.add_row("1" * 40, long_state, long_alias)
    assert any(long_alias in line and long_state in line for line in plain.lines())

    console = _rich(50)
    table = new_table(console, "version", "state", "serving")
    table.add_row("1" * 40, long_state, long_alias)
    console.print(table)
    out = console.file.getvalue()
    assert "…" not in out
    assert long_state in out  # folded columns keep short words whole
    assert "".join(ch for ch in out if ch in "x") == "x" * 90  # every character is still there


def test_verification_report_escapes_what_a_bundle_says(capsys) -> None:
    from assay.cli.sign_cmds import render_report

    report = SimpleNamespace(
        ok=False,
        subject="model[/]dir",
        problems=["key hint [/] is not trusted", "signed by [bold]nobody[/bold]"],
        modified=["w[/].bin"],
        missing=[],
        extra=["[red]x[/red]"],
    )
    rich = _rich(200)
    render_report(rich, report)
    render_report(PlainConsole(), report)
    for out in (rich.file.getvalue(), capsys.readouterr().out):
        for text in (
            "model[/]dir",
            "key hint [/] is not trusted",
            "[bold]nobody[/bold]",
            "w[/].bin",
        ):
            assert text in out, (text, out)


PLAYBOOK = """\
id: markup-{suffix}
description: "[bold red]not a style[/]"
severity: low
steps:
  - id: tell
    action: notify
    description: "[/]"
    with:
      message: "hint [/] and [link=http://127.0.0.1/]click[/link] for {{{{ inputs.who }}}}"
      file: "{notes}"
inputs:
  who: {{type: string, default: "[/]"}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("terminal", [False, True], ids=["ci-log", "terminal"])
def test_d9_markup_in_playbook_messages(home, invoke, tmp_path, monkeypatch, terminal):
    """The plan and the result print the playbook's text literally, on a terminal (rich) and in a
    CI log (plain), instead of a traceback (MarkupError) or silently dropped brackets."""
    if terminal:
        monkeypatch.setattr(context, "_is_terminal", lambda stream: True)
        monkeypatch.setenv("COLUMNS", "200")
    path = tmp_path / "markup.yaml"
    path.write_text(PLAYBOOK.format(suffix="x", notes=tmp_path / "notes.jsonl"))
    plan = invoke("incident", "run", path, "--dry-run")
    assert plan.exit_code == 0, (plan.stdout, plan.stderr)
    assert "hint [/] and [link=http://127.0.0.1/]click[/link] for [/]" in plan.stdout

    done = invoke("incident", "run", path, "--yes")
    assert done.exit_code == 0, (done.stdout, done.stderr)
    assert "status: completed" in done.stdout
    listed = invoke("incident", "list")
    assert listed.exit_code == 0 and "markup-x" in listed.stdout


@pytest.mark.slow
def test_ci_log_tables_show_long_ids_and_states_in_full(home, invoke, tmp_path):
    """Not a terminal (CliRunner): a 150-character playbook id and its status are never cut."""
    long_id = "known-good-production-" + "incident-playbook-" * 7
    path = tmp_path / "long.yaml"
    text = PLAYBOOK.format(suffix="y", notes=tmp_path / "notes.jsonl")
    path.write_text(text.replace("markup-y", long_id))
    assert invoke("incident", "run", path, "--yes").exit_code == 0
    out = invoke("incident", "list")
    assert out.exit_code == 0
    row = next(line for line in out.stdout.splitlines() if long_id in line)
    assert "completed" in row and "…" not in out.stdout
    data = json.loads(invoke("incident", "list", "--json").stdout)
    assert data[-1]["playbook_id"] == long_id
