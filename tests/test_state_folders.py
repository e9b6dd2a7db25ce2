"""Review 58 F1 and F5. F1: a --state or --output-dir folder that someone else can write to; root's cron run
must not follow a link they planted there (``STATE_DIR/.lock -> /etc/shadow``, ``OUT_DIR/session_date=...
-> /anywhere``): such folders are refused before anything is written, and the lock never follows a link.
F5: the scale options an incremental run cannot keep are refused, not ignored.

The tests run as root (CI, the README's clone) or as a plain user; ownership is set with ``os.chown``,
which only root may do, so those tests skip for a plain user."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.helpers import flat, run_cli, write_text

NOBODY = 65534
EVENTS = "user_id,timestamp,url\nu1,2024-05-01T10:00:00Z,https://a.example/\nu2,2024-05-01T10:05:00Z,https://a.example/b\n"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a folder to another user")


def _inputs(tmp_path: Path) -> Path:
    return write_text(tmp_path / "in" / "events.csv", EVENTS)


def _victim(tmp_path: Path) -> Path:
    victim = write_text(tmp_path / "victim" / "secret", "root's own data\n")
    victim.chmod(0o600)
    return victim


@as_root
def test_a_lock_link_in_a_state_folder_another_user_owns_is_not_followed(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    state = tmp_path / "attack"
    state.mkdir()
    os.symlink(victim, state / ".lock")
    os.lchown(state / ".lock", NOBODY, NOBODY)
    os.chown(state, NOBODY, NOBODY)
    out = tmp_path / "out"
    result = run_cli(_inputs(tmp_path), "--state", state, "--output-dir", out)
    assert result.exit_code == 1, result.output
    assert victim.read_text() == "root's own data\n"
    assert flat("can be written by nobody, who owns it") in flat(result.output)
    assert flat("run sessionize as nobody") in flat(result.output)
    assert not out.exists() or not any(out.iterdir())


def test_a_lock_link_in_ones_own_state_folder_is_refused_not_followed(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    os.symlink(victim, state / ".lock")
    result = run_cli(_inputs(tmp_path), "--state", state, "--output-dir", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert victim.read_text() == "root's own data\n"
    assert flat("lock file") in flat(result.output) and flat("is a symbolic link") in flat(result.output)


@as_root
def test_an_output_folder_another_user_owns_is_refused_before_any_write(tmp_path: Path) -> None:
    """The partition attack: after a first run, the folder's owner links ``session_date=...`` elsewhere
    and the next run would write (or remove) its partition there."""
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    out, state = tmp_path / "out", tmp_path / "state"
    first = run_cli(_inputs(tmp_path), "--state", state, "--output-dir", out)
    assert first.exit_code == 0, first.output
    os.chown(out, NOBODY, NOBODY)
    partition = out / "session_date=2024-05-01"
    for part in partition.iterdir():
        part.unlink()
    partition.rmdir()
    partition.symlink_to(victim_dir)
    os.lchown(partition, NOBODY, NOBODY)
    later = write_text(
        tmp_path / "in" / "later.csv", "user_id,timestamp,url\nu3,2024-05-01T12:00:00Z,https://a.example/\n"
    )
    result = run_cli(later, "--state", state, "--output-dir", out)
    assert result.exit_code == 1, result.output
    assert list(victim_dir.iterdir()) == []
    assert flat(f"--output-dir {out}") in flat(result.output)


@pytest.mark.parametrize(("mode", "refused"), [(0o777, True), (0o2775, False)], ids=["world", "group"])
def test_a_world_writable_folder_is_refused_a_group_writable_one_not(
    tmp_path: Path, mode: int, refused: bool
) -> None:
    """Anyone may plant a link in a world-writable folder; a group-writable one's group is trusted."""
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(mode)
    result = run_cli(_inputs(tmp_path), "--state", tmp_path / "state", "--output-dir", out)
    if refused:
        assert result.exit_code == 1, result.output
        assert flat("world-writable") in flat(result.output) and flat("chmod o-w") in flat(result.output)
        assert list(out.iterdir()) == []
    else:
        assert result.exit_code == 0, result.output
        assert any(out.glob("session_date=*/*.parquet"))


def test_a_new_folder_in_a_sticky_shared_directory_is_ones_own(tmp_path: Path) -> None:
    """``--state /tmp/shop/state`` made by this run in a /tmp-like directory: only this user writes to it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    state, out = shared / "state", shared / "out"
    first = run_cli(_inputs(tmp_path), "--state", state, "--output-dir", out)
    assert first.exit_code == 0, first.output
    assert stat.S_IMODE(state.stat().st_mode) & stat.S_IWOTH == 0
    again = run_cli(_inputs(tmp_path), "--state", state, "--output-dir", out)
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize(
    "options",
    [
        ["--memory-limit", "700M"],
        ["--buckets", "8"],
        ["--temp-dir", "."],
        ["--memory-limit", "1G", "--buckets", "2"],
    ],
)
def test_scale_options_are_refused_with_state_not_ignored(tmp_path: Path, options: list[str]) -> None:
    """Review 58 F5: the incremental run has no buckets; a limit it cannot keep is refused, as Dask does."""
    result = run_cli(
        _inputs(tmp_path), "--state", tmp_path / "state", "--output-dir", tmp_path / "out", *options
    )
    assert result.exit_code == 2, result.output
    assert flat("cannot be used with --state") in flat(result.output)
    assert flat(options[0]) in flat(result.output)
    assert not (tmp_path / "state").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("inner", ["state", "out"])
def test_a_state_inside_the_output_directory_is_refused_before_any_write(tmp_path: Path, inner: str) -> None:
    """Review 58 F7: the state's lock and versions inside OUT_DIR made ``pl.scan_parquet(OUT_DIR)`` fail."""
    outer = tmp_path / "outer"
    state, out = (outer / "state", outer) if inner == "state" else (outer, outer / "out")
    result = run_cli(_inputs(tmp_path), "--state", state, "--output-dir", out)
    assert result.exit_code == 2, result.output
    assert flat(f"--{'state' if inner == 'state' else 'output-dir'}") in flat(result.output)
    assert flat("give each a directory of its own") in flat(result.output)
    assert not outer.exists()


def test_a_state_folder_that_cannot_be_written_is_named_not_its_scratch_folder(tmp_path: Path) -> None:
    """Review 58 F7: an immutable (or read-only) state folder was named by the random scratch folder the
    run could not make in it (``STATE/.tmp-run-k33z64mf: permission denied``)."""
    state, out = tmp_path / "state", tmp_path / "out"
    assert run_cli(_inputs(tmp_path), "--state", state, "--output-dir", out).exit_code == 0
    later = write_text(
        tmp_path / "in" / "later.csv", "user_id,timestamp,url\nu3,2024-05-01T12:00:00Z,https://a.example/\n"
    )
    done = subprocess.run(["chattr", "+i", str(state)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot chattr +i here: {done.stderr.decode().strip()}")
    try:
        result = run_cli(later, "--state", state, "--output-dir", out)
    finally:
        subprocess.run(["chattr", "-i", str(state)], check=False)
    assert result.exit_code == 1, result.output
    assert flat(f"Cannot write the state {state}: Operation not permitted.") in flat(result.output)
    assert ".tmp-run-" not in result.output
