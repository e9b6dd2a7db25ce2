"""Issue 18, point 3: --anonymize-ip hides the full address everywhere it promises to.

Access logs identify visitors by address: the visitor key (so user_id and session_id) is built
from the truncated address; rejected rows are truncated; the state fingerprint of the secret
cannot be used to test guesses cheaply; spill directories are private and removed after a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import sessionize
from sessionize.config import legacy_secret_fingerprint, secret_fingerprint
from sessionize.partition import SessionSettings
from tests.helpers import CITY_DB, EVENTS

ADDRESS = "83.149.9.216"
LOG = (
    f'{ADDRESS} - - [17/May/2015:10:05:03 +0000] "GET /index.html HTTP/1.1" 200 203 '
    '"http://semicomplete.com/" "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_1) Firefox/27.0"\n'
    f'{ADDRESS} - - [17/May/2015:10:05:43 +0000] "GET /about.html HTTP/1.1" 200 171 '
    '"http://semicomplete.com/index.html" "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_1) Firefox/27.0"\n'
    f'{ADDRESS} - - [17/May/2015:25:99:99 +0000] "GET /broken.html HTTP/1.1" 200 171 "-" "curl/8"\n'
)


def everything_written(directory: Path) -> str:
    """Every output file's content as text (Parquet files read as tables)."""
    texts = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.suffix == ".parquet":
            texts.append(pl.read_parquet(path).write_csv())
        elif path.is_file():
            texts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(texts)


@pytest.mark.parametrize("mode", [True, "before-geo"], ids=["after-geo", "before-geo"])
def test_no_full_address_in_the_table_ids_or_rejects(tmp_path: Path, mode: object) -> None:
    log = tmp_path / "in" / "access.log"
    log.parent.mkdir()
    log.write_text(LOG, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    result = sessionize.run(
        [log],
        output=out / "sessions.csv",
        rejects=out / "rejects.csv",
        on_invalid="skip",
        anonymize_ip=mode,
        drop_columns="ip",
        no_geo=True,
    )
    assert result.session_count == 1 and result.rejected == 1
    row = result.sessions.row(0, named=True)
    assert row["user_id"].startswith("83.149.9.0|")
    assert ADDRESS not in everything_written(out)


def test_the_visitor_key_without_anonymize_keeps_the_address(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(LOG, encoding="utf-8")
    result = sessionize.run([log], on_invalid="skip", no_geo=True)
    assert result.sessions.get_column("user_id")[0].startswith(ADDRESS + "|")


def test_late_rows_in_the_rejects_of_an_incremental_run_are_truncated(tmp_path: Path) -> None:
    first, late = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("user_id,timestamp,ip\nu,2024-05-02T10:00:00Z,83.149.9.216\n", encoding="utf-8")
    late.write_text("user_id,timestamp,ip\nu,2024-05-01T10:00:00Z,83.149.9.216\n", encoding="utf-8")
    options: dict[str, Any] = {
        "state": tmp_path / "st",
        "output_dir": tmp_path / "out",
        "no_geo": True,
        "anonymize_ip": True,
    }
    sessionize.run([first], **options)
    rejects = tmp_path / "rejects.csv"
    result = sessionize.run([late], on_invalid="skip", rejects=rejects, **options)
    assert result.incremental is not None and result.incremental.late == 1
    text = rejects.read_text(encoding="utf-8")
    assert "late" in text and "83.149.9.0" in text and ADDRESS not in text


def test_the_state_keeps_no_cheap_fingerprint_of_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = b"hunter2"
    monkeypatch.setenv("SESSIONIZE_TEST_SECRET", secret.decode())
    events = tmp_path / "a.csv"
    events.write_text("user_id,timestamp\nu,2024-05-01T10:00:00Z\n", encoding="utf-8")
    state = tmp_path / "st"
    sessionize.run(
        [events],
        state=state,
        output_dir=tmp_path / "out",
        no_geo=True,
        hash_user_ids="SESSIONIZE_TEST_SECRET",
    )
    manifest = json.loads(next(state.glob("state-*/manifest.json")).read_text(encoding="utf-8"))
    kept = manifest["settings"]["hash_user_ids"]
    assert kept == secret_fingerprint(secret)
    assert hashlib.sha256(secret).hexdigest()[:16] not in json.dumps(manifest)
    assert kept.startswith("scrypt:")


def test_a_state_with_the_old_fingerprint_of_the_same_secret_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSIONIZE_TEST_SECRET", "hunter2")
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("user_id,timestamp\nu,2024-05-01T10:00:00Z\n", encoding="utf-8")
    b.write_text("user_id,timestamp\nu,2024-05-01T12:00:00Z\n", encoding="utf-8")
    options: dict[str, Any] = {
        "state": tmp_path / "st",
        "output_dir": tmp_path / "out",
        "no_geo": True,
        "hash_user_ids": "SESSIONIZE_TEST_SECRET",
    }
    sessionize.run([a], **options)
    path = next((tmp_path / "st").glob("state-*/manifest.json"))
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["settings"]["hash_user_ids"] = legacy_secret_fingerprint(b"hunter2")
    path.write_text(json.dumps(manifest), encoding="utf-8")
    continued = sessionize.run([b], **options)
    assert continued.incremental is not None and continued.incremental.files_processed == [str(b)]
    monkeypatch.setenv("SESSIONIZE_TEST_SECRET", "another secret")
    c = tmp_path / "c.csv"
    c.write_text("user_id,timestamp\nu,2024-05-01T14:00:00Z\n", encoding="utf-8")
    with pytest.raises(sessionize.UsageError, match="--hash-user-ids"):
        sessionize.run([c], **options)


def test_spill_directories_are_private_and_a_dead_runs_are_removed(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    # A spill directory left by a process that is gone (kill -9): the next run removes it.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = spill / f"sessionize-buckets-{dead.stdout.strip()}-abcd1234"
    stale.mkdir()
    (stale / "b00000-0000000.parquet").write_bytes(b"raw events")
    # One of a live process (this one's parent, say) is left alone.
    alive = spill / f"sessionize-buckets-{os.getppid()}-efgh5678"
    alive.mkdir()
    seen: list[int] = []
    from sessionize import partition

    original = partition.sessionize_partition

    def spy(events: pl.DataFrame, settings: SessionSettings) -> pl.DataFrame:
        for path in spill.glob("sessionize-buckets-*"):
            if path != alive:
                seen.append(stat.S_IMODE(path.stat().st_mode))
        return original(events, settings)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(partition, "sessionize_partition", spy)
        sessionize.run([EVENTS], no_geo=True, buckets=2, temp_dir=spill)
    assert seen and all(mode == 0o700 for mode in seen)
    assert not stale.exists()
    assert alive.exists()


LOCATED = ["81.2.69.142", "89.160.20.112", "216.160.83.56", "2.125.160.216"]


def test_the_incremental_state_keeps_no_full_address_and_sessions_stay_located(tmp_path: Path) -> None:
    """Sessions that continue across runs are rebuilt from the state's events: located where their
    first event's full address was, though the state holds only truncated ones."""
    header = "user_id,timestamp,ip,url"
    parts: list[list[str]] = [[], [], []]
    for n, address in enumerate(LOCATED):
        for minute in range(0, 90, 10):  # each visit spans the three files, cut at :20 and :50
            part = 0 if minute < 20 else 1 if minute < 50 else 2
            moment = f"2024-05-01T{10 + minute // 60:02d}:{minute % 60:02d}:00Z"
            parts[part].append(f"u{n},{moment},{address},https://a.example/{minute}")
    paths = []
    for number, rows in enumerate(parts):
        path = tmp_path / f"part{number}.csv"
        path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
        paths.append(path)
    options: dict[str, Any] = {"geoip_db": CITY_DB, "anonymize_ip": True, "valid_until": "2100-01-01"}
    whole = sessionize.run(paths, **options)
    state, out = tmp_path / "state", tmp_path / "out"
    for path in paths:
        sessionize.run([path], state=state, output_dir=out, **options)
    table = pl.concat([pl.read_parquet(p) for p in sorted(out.glob("session_date=*/*.parquet"))])
    keys = ["user_id", "session_start", "session_id"]
    columns = ["user_id", "city", "country", "ip", "session_id"]
    assert table.sort(keys).select(columns).rows() == whole.sessions.sort(keys).select(columns).rows()
    assert whole.sessions.get_column("country").drop_nulls().len() >= 3
    for address in LOCATED:
        assert address not in everything_written(state)
        assert address not in everything_written(out)


@pytest.mark.parametrize("mode", [True, "before-geo"], ids=["after-geo", "before-geo"])
def test_spill_files_hold_no_full_address(tmp_path: Path, mode: bool | str) -> None:
    rows = ["user_id,timestamp,ip"] + [
        f"u{n},2024-05-01T10:{n:02d}:00Z,{LOCATED[n % len(LOCATED)]}" for n in range(40)
    ]
    events = tmp_path / "events.csv"
    events.write_text("\n".join(rows) + "\n", encoding="utf-8")
    spill = tmp_path / "spill"
    spill.mkdir()
    seen: list[str] = []
    from sessionize import partition

    original = partition.sessionize_partition

    def spy(frame: pl.DataFrame, settings: SessionSettings) -> pl.DataFrame:
        for path in spill.rglob("*.parquet"):
            seen.append(pl.read_parquet(path).write_csv())
        return original(frame, settings)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(partition, "sessionize_partition", spy)
        bucketed = sessionize.run([events], geoip_db=CITY_DB, anonymize_ip=mode, buckets=3, temp_dir=spill)
    assert seen, "the spill files were not looked at"
    for address in LOCATED:
        assert all(address not in text for text in seen)
    whole = sessionize.run([events], geoip_db=CITY_DB, anonymize_ip=mode)
    keys = ["user_id", "session_start"]
    assert bucketed.sessions.sort(keys).equals(whole.sessions.sort(keys))
    assert bucketed.geo_counts == whole.geo_counts


@pytest.mark.parametrize(
    ("address", "anonymized"),
    [
        # 6to4 carries 203.0.113.77 in its first 48 bits: the /48 kept it whole.
        ("2002:cb00:714d::1", "2002:cb00:7100::"),
        ("2002:cb00:714d:1234:5678::9", "2002:cb00:7100::"),
        # Teredo's client address (obfuscated) and NAT64's IPv4 sit in the zeroed 80 bits.
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:0:4136::"),
        ("64:ff9b::cb00:714d", "64:ff9b::"),
        ("::ffff:203.0.113.77", "::ffff:203.0.113.0"),
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
    ],
)
def test_an_ipv6_address_that_carries_an_ipv4_one_hides_it(
    tmp_path: Path, address: str, anonymized: str
) -> None:
    source = tmp_path / "events.csv"
    source.write_text(f"user_id,timestamp,ip\nu1,2024-05-01T10:00:00Z,{address}\n", encoding="utf-8")
    out = tmp_path / "sessions.csv"
    sessionize.run([source], output=str(out), no_geo=True, anonymize_ip=True)
    assert pl.read_csv(out, infer_schema=False)["ip"].to_list() == [anonymized]
    assert "714d" not in out.read_text(encoding="utf-8")
