"""The README never drifts from the CLI, the output schema or CI."""

from __future__ import annotations

import re

import typer.main

import sessionize
from sessionize.cli import app
from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def _shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", README, flags=re.S)


def test_every_run_option_is_documented() -> None:
    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    options = [opt for param in command.params for opt in param.opts if opt.startswith("--")]
    assert len(options) > 10
    missing = [
        opt for opt in options if opt != "--help" and f"`{opt}" not in README and f" {opt}" not in README
    ]
    assert missing == []


def test_output_schema_table_matches_the_code() -> None:
    rows = re.findall(r"^\| `([a-z_]+)` \| ([A-Za-z0-9(), ]+) \|", README, flags=re.M)
    documented = [name for name, _ in rows if name in sessionize.SESSION_SCHEMA]
    assert documented == [c.name for c in sessionize.SESSION_COLUMNS]
    types = dict(rows)
    for column in sessionize.SESSION_COLUMNS:
        expected = "Datetime(us, UTC)" if column.dtype == sessionize.schema.TIMESTAMP else str(column.dtype)
        assert types[column.name] == expected, column.name


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    blocks = _shell_blocks()
    assert len(blocks) == 2
    install, tests = blocks
    assert "pip install" in install
    assert "sessionize run sample_data/" in install
    assert "pytest" in tests
    ci_lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests.strip() in [line.strip() for line in ci_lines]


def test_every_input_alias_is_documented() -> None:
    for aliases in sessionize.schema.COLUMN_ALIASES.values():
        for alias in aliases:
            assert f"`{alias}`" in README, alias
