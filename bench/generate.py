"""Generate a large, realistic, shuffled clickstream for benchmarks: ``<out>.parquet`` and ``<out>.csv``.

Usage (from the repository root)::

    python bench/generate.py --events 1000000 --users 100000 --ips 100000 --out bench/data/events_1m

Columns: ``user_id`` (``u0000042``), ``timestamp`` (UTC microseconds; ISO 8601 with ``Z`` in the CSV),
``event``, ``url``, ``referrer``, ``ip``. The site is ``https://shop.example.com``.

What the data looks like:

* Skewed users: visits per user follow a lognormal law (most users come once or twice, a few come
  hundreds of times). Every user makes at least one visit when there are enough events.
* Visits: 1 + geometric events (mean about 4). The first event is a page view; later events are
  mostly page views, then clicks, scrolls and add-to-carts. In-visit gaps are seconds to minutes,
  with about 0.5% of them 25-30 minutes (just inside the default timeout); gaps between visits are
  hours to days, with about 2% of them between 30 and 35 minutes (just outside it).
* URLs: a few thousand paths with Zipf-like popularity; about 20% of visits land on a URL with UTM
  parameters. Non-page-view events carry the URL of the page they happen on.
* Referrer: on the landing page view, search (~35%), social (~15%), other sites (~15%) or none
  (~35%, direct); later page views carry the previous page (internal), other events the referrer of
  the page they happen on.
* IP: a pool of ``--ips`` distinct public-looking addresses, ~80% IPv4 (uniform in 1.0.0.0 to
  223.255.255.255 without private and reserved ranges) and ~20% IPv6 (``2001:xxxx:`` and
  ``2a0x:xxxx:`` prefixes). Each user has a home address; ~30% of visits come from another one.

Everything is vectorized (numpy and Polars), so 1M events take a few seconds. The output depends only
on the arguments: the same ``--seed`` gives the same rows in the same order.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

SITE: Final = "https://shop.example.com"
#: Every event is before END; each user's last event is in the SPREAD_DAYS before it.
END: Final = datetime(2026, 11, 1, tzinfo=UTC)
SPREAD_DAYS: Final = 28
CSV_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S%.6fZ"

US: Final = 1
SECOND: Final = 1_000_000 * US
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR
TIMEOUT: Final = 30 * MINUTE

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Events after the landing page view, and their weights.
EVENT_NAMES: Final = ("page_view", "click", "scroll", "add_to_cart")
EVENT_WEIGHTS: Final = (0.66, 0.17, 0.12, 0.05)

SEARCH_REFERRERS: Final = (
    "https://www.google.com/",
    "https://www.google.co.uk/",
    "https://www.google.de/",
    "https://www.google.fr/",
    "https://www.bing.com/search?q=running+shoes",
    "https://duckduckgo.com/",
    "https://search.yahoo.com/search?p=trail+shoes",
    "https://yandex.ru/search/?text=shoes",
    "https://www.ecosia.org/search?q=socks",
)
SOCIAL_REFERRERS: Final = (
    "https://l.facebook.com/l.php?u=https%3A%2F%2Fshop.example.com%2F",
    "https://m.facebook.com/",
    "https://t.co/x7Yz1",
    "https://www.instagram.com/",
    "https://www.reddit.com/r/running/comments/abc123/",
    "https://out.reddit.com/t3_xyz",
    "https://www.pinterest.com/pin/123456/",
    "https://www.linkedin.com/feed/",
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
    "android-app://com.google.android.gm/",
    "android-app://com.slack/",
)
OTHER_DOMAINS: Final = (
    "runnersworld.com",
    "outdoorgearlab.com",
    "news.ycombinator.com",
    "medium.com",
    "en.wikipedia.org",
    "www.bbc.co.uk",
    "www.theguardian.com",
    "www.nytimes.com",
    "blog.example.net",
    "forum.example.org",
    "deals.example.co.uk",
    "www.tripadvisor.com",
    "www.trustpilot.com",
    "mail.google.com",
    "outlook.live.com",
    "www.amazon.de",
    "www.ebay.com",
    "www.kleinanzeigen.de",
    "www.leboncoin.fr",
    "www.mumsnet.com",
)
UTM_CAMPAIGNS: Final = (
    ("google", "cpc", "black_friday_2026"),
    ("google", "cpc", "brand"),
    ("facebook", "paid_social", "winter%20sale"),
    ("newsletter", "email", "2026-11-weekly"),
    ("instagram", "social", "influencer_q4"),
    ("bing", "cpc", "generic_shoes"),
    ("affiliate", "referral", "partner-042"),
)
CATEGORIES: Final = ("shoes", "jackets", "socks", "bags", "hats", "gloves", "trousers", "shirts")


def _gather(values: pl.Series, index: npt.NDArray[np.integer]) -> pl.Series:
    """``values[index]`` (a Polars gather, no Python loop per row)."""
    return values.gather(pl.Series(index.astype(np.int64)))


def _zipf_choice(rng: np.random.Generator, n_values: int, size: int, exponent: float = 1.1) -> IntArray:
    """Indices in ``[0, n_values)`` with Zipf-like popularity (index 0 the most popular)."""
    weights = 1.0 / np.arange(1, n_values + 1) ** exponent
    return rng.choice(n_values, size=size, p=weights / weights.sum()).astype(np.int64)


def page_paths() -> list[str]:
    """The site's pages, most popular first (a few thousand paths)."""
    paths = ["/", "/cart", "/checkout", "/search?q=shoes", "/sale", "/account", "/blog"]
    paths += [f"/category/{c}" for c in CATEGORIES]
    paths += [f"/products/{c}-{i}" for i in range(300) for c in CATEGORIES]
    paths += [f"/blog/post-{i}" for i in range(400)]
    paths += [f"/search?q={c}+{i}" for i in range(50) for c in CATEGORIES]
    return paths


def referrer_pool() -> tuple[list[str], list[str], list[str]]:
    """External referrers: search, social and other sites (a few hundred distinct URLs)."""
    other = [f"https://{d}/" for d in OTHER_DOMAINS]
    other += [f"https://{d}/article/{i}" for d in OTHER_DOMAINS for i in range(20)]
    return list(SEARCH_REFERRERS), list(SOCIAL_REFERRERS), other


# IPv4 ranges that are not global (Python's ipaddress ``is_global`` is False), as (first, last) ints.
_V4_RESERVED: Final = (
    ("10.0.0.0", "10.255.255.255"),
    ("100.64.0.0", "100.127.255.255"),
    ("127.0.0.0", "127.255.255.255"),
    ("169.254.0.0", "169.254.255.255"),
    ("172.16.0.0", "172.31.255.255"),
    ("192.0.0.0", "192.0.0.255"),
    ("192.0.2.0", "192.0.2.255"),
    ("192.88.99.0", "192.88.99.255"),
    ("192.168.0.0", "192.168.255.255"),
    ("198.18.0.0", "198.19.255.255"),
    ("198.51.100.0", "198.51.100.255"),
    ("203.0.113.0", "203.0.113.255"),
)


def _v4_int(text: str) -> int:
    a, b, c, d = (int(part) for part in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def random_ipv4(rng: np.random.Generator, n: int) -> pl.Series:
    """``n`` distinct IPv4 addresses, uniform in 1.0.0.0-223.255.255.255 minus reserved ranges."""
    chosen = np.empty(0, dtype=np.int64)
    while chosen.size < n:
        draw = rng.integers(_v4_int("1.0.0.0"), _v4_int("223.255.255.255") + 1, size=2 * (n - chosen.size))
        keep = np.ones(draw.size, dtype=np.bool_)
        for first, last in _V4_RESERVED:
            keep &= (draw < _v4_int(first)) | (draw > _v4_int(last))
        # Keep the first occurrence of each address, in draw order (np.unique would sort them).
        merged = np.concatenate([chosen, draw[keep]])
        _, first_index = np.unique(merged, return_index=True)
        chosen = merged[np.sort(first_index)]
    value = chosen[:n]
    octets = [pl.Series((value >> shift) & 255).cast(pl.String) for shift in (24, 16, 8, 0)]
    return pl.select(pl.concat_str(octets, separator=".")).to_series().alias("ip")


def random_ipv6(rng: np.random.Generator, n: int) -> pl.Series:
    """``n`` distinct global IPv6 addresses under ``2001:xxxx::/32`` (RIR space) or ``2a0x::/16``.

    Half have a random 64-bit interface id (SLAAC-like), half a short one (``2a02:1234:5678::1f``).
    """
    hexes = pl.Series([f"{i:x}" for i in range(1 << 16)], dtype=pl.String)
    # 2001:0400:: and up is allocated to RIRs; 2001:db8::/32 is documentation.
    second_2001 = rng.integers(0x0400, 1 << 16, size=n)
    second_2001[second_2001 == 0x0DB8] = 0x0DB9
    is_2001 = rng.random(n) < 0.5
    first = np.where(is_2001, 0x2001, 0x2A00 + rng.integers(0, 16, size=n))
    second = np.where(is_2001, second_2001, rng.integers(0, 1 << 16, size=n))
    groups = [first, second, *(rng.integers(0, 1 << 16, size=n) for _ in range(6))]
    short = rng.random(n) < 0.5
    # The counter makes every address distinct: it is the 3rd and 4th group of the short ones and
    # replaces the last group pair of the long ones (a collision of 96 random bits is negligible).
    counter = np.arange(n, dtype=np.int64)
    groups[2] = np.where(short, counter >> 16, groups[2])
    groups[3] = np.where(short, counter & 0xFFFF, groups[3])
    groups[6] = np.where(short, 0, counter >> 16)
    groups[7] = np.where(short, rng.integers(1, 256, size=n), counter & 0xFFFF)
    parts = [_gather(hexes, g) for g in groups]
    full = pl.select(pl.concat_str(parts, separator=":")).to_series()
    compact = pl.select(pl.concat_str([*parts[:4], pl.lit(""), parts[7]], separator=":")).to_series()
    return pl.select(pl.when(pl.Series(short)).then(compact).otherwise(full)).to_series().alias("ip")


def random_ips(rng: np.random.Generator, n: int, v6_share: float = 0.2) -> pl.Series:
    """``n`` distinct public-looking addresses, about ``v6_share`` of them IPv6, in random order."""
    n_v6 = round(n * v6_share)
    pool = pl.concat([random_ipv4(rng, n - n_v6), random_ipv6(rng, n_v6)])
    return _gather(pool, rng.permutation(n))


def _segment_starts(is_start: BoolArray) -> IntArray:
    """For each position, the index of the latest position at or before it where ``is_start``."""
    index = np.where(is_start, np.arange(is_start.size), 0)
    return np.maximum.accumulate(index)


def generate(n_events: int, n_users: int, n_ips: int, seed: int = 1) -> pl.DataFrame:
    """The shuffled event frame: ``user_id, timestamp, event, url, referrer, ip``."""
    rng = np.random.default_rng(seed)

    # Visits and their lengths: draw more than needed, keep exactly n_events events.
    mean_len = 4.0
    lengths = rng.geometric(1 / mean_len, size=int(n_events / mean_len * 1.3) + 16)
    total = np.cumsum(lengths)
    n_visits = int(np.searchsorted(total, n_events)) + 1
    lengths = lengths[:n_visits]
    lengths[-1] -= int(total[n_visits - 1] - n_events)

    # Visits to users: every user once (when there are enough visits), the rest lognormal-skewed.
    activity = rng.lognormal(0.0, 1.3, size=n_users)
    base = np.arange(min(n_users, n_visits))
    extra = rng.choice(n_users, size=n_visits - base.size, p=activity / activity.sum())
    visit_user = np.concatenate([base, extra])
    visit_user.sort()  # a user's visits are consecutive; their order in time is their order here
    visits_of_user = np.bincount(visit_user, minlength=n_users)

    # Event-level arrays in (user, visit, position) order.
    visit_of_event = np.repeat(np.arange(n_visits), lengths)
    user = visit_user[visit_of_event]
    visit_first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    is_landing = np.zeros(n_events, dtype=np.bool_)
    is_landing[visit_first] = True
    is_user_first = np.concatenate([[True], user[1:] != user[:-1]])

    # Gaps before each event. Within a visit: lognormal, median 25 s, capped at 24 min; ~0.5% of them
    # 25-30 minutes (inside the timeout). Between visits: heavier users come back sooner, median a
    # day / (visits/5), 31 minutes to 14 days; ~2% of them 30-35 minutes (a new session all the same).
    dwell = np.minimum(rng.lognormal(np.log(25 * SECOND), 1.2, size=n_events), 24 * MINUTE)
    near_in = rng.random(n_events) < 0.005
    dwell = np.where(near_in, rng.integers(25 * MINUTE, TIMEOUT + 1, size=n_events), dwell)
    median_gap = DAY * 5.0 / np.maximum(visits_of_user[user], 5)
    visit_gap = np.clip(rng.lognormal(np.log(median_gap), 1.2), 31 * MINUTE, 14 * DAY)
    near_out = rng.random(n_events) < 0.02
    visit_gap = np.where(near_out, rng.integers(TIMEOUT + 1, 35 * MINUTE, size=n_events), visit_gap)
    gap = np.where(is_landing, visit_gap, dwell).astype(np.int64)
    gap[is_user_first] = 0
    elapsed = np.cumsum(gap)
    user_first = _segment_starts(is_user_first)
    since_first = elapsed - elapsed[user_first]
    # Every user's last event falls in the SPREAD_DAYS before END: the data never reaches the future
    # (sessionize rejects events after now by default), whatever the date of the benchmark.
    is_user_last = np.concatenate([user[1:] != user[:-1], [True]])
    span = np.zeros(n_users, dtype=np.int64)
    span[user[is_user_last]] = since_first[is_user_last]
    last_event = int(END.timestamp()) * SECOND - rng.integers(1, SPREAD_DAYS * DAY, size=n_users)
    timestamp = (last_event - span)[user] + since_first

    # Events: the landing event is a page view.
    event_code = rng.choice(len(EVENT_NAMES), size=n_events, p=EVENT_WEIGHTS)
    event_code[is_landing] = 0
    is_pageview = event_code == 0
    pageview_of_event = _segment_starts(is_pageview)  # the page view each event happens on
    previous_pageview = np.concatenate([[0], pageview_of_event[:-1]])  # the one before a page view

    # URL of each page view; ~20% of visits land on a UTM-tagged URL.
    paths = pl.Series(page_paths(), dtype=pl.String)
    utm_tags = pl.Series([f"?utm_source={s}&utm_medium={m}&utm_campaign={c}" for s, m, c in UTM_CAMPAIGNS])
    page = _gather(paths, _zipf_choice(rng, paths.len(), n_events))
    tag = _gather(utm_tags, rng.choice(utm_tags.len(), size=n_visits)[visit_of_event])
    tagged = is_landing & (rng.random(n_visits) < 0.2)[visit_of_event]
    pageview_url = pl.select(
        pl.concat_str(pl.lit(SITE), page, pl.when(pl.Series(tagged)).then(tag).otherwise(pl.lit("")))
    ).to_series()

    # Referrer of each page view: on the landing one search, social, other or none (direct); on the
    # others the previous page (internal).
    search, social, other = referrer_pool()
    external = pl.Series([*search, *social, *other], dtype=pl.String)
    kind = rng.choice(4, size=n_visits, p=(0.35, 0.15, 0.15, 0.35))
    offsets = np.array([0, len(search), len(search) + len(social), 0])
    sizes = np.array([len(search), len(social), len(other), 1])
    pick = offsets[kind] + np.floor(rng.random(n_visits) ** 2 * sizes[kind]).astype(np.int64)
    landing_referrer = _gather(external, pick[visit_of_event])
    has_referrer = (kind != 3)[visit_of_event]
    pageview_referrer = pl.select(
        pl.when(pl.Series(~is_landing))
        .then(_gather(pageview_url, previous_pageview))
        .when(pl.Series(has_referrer))
        .then(landing_referrer)
        .otherwise(pl.lit(None, pl.String))
    ).to_series()

    # IPs: each user has a home address (so with --users >= --ips every pool address occurs); a
    # user's first visit comes from it, later ones ~30% of the time from another address of the pool.
    pool = random_ips(rng, n_ips)
    home = rng.permutation(max(n_users, n_ips))[:n_users] % n_ips
    first_of_user = np.concatenate([[True], visit_user[1:] != visit_user[:-1]])
    at_home = first_of_user | (rng.random(n_visits) < 0.7)
    visit_ip = np.where(at_home, home[visit_user], rng.integers(0, n_ips, size=n_visits))

    user_number = pl.Series(rng.permutation(n_users)[user])  # user ids are not in activity order
    events = pl.DataFrame(
        {
            "user_id": pl.select(
                pl.concat_str(pl.lit("u"), user_number.cast(pl.String).str.zfill(7))
            ).to_series(),
            "timestamp": pl.Series(timestamp).cast(pl.Datetime("us", "UTC")),
            "event": _gather(pl.Series(EVENT_NAMES), event_code),
            # Other events carry the URL and referrer of the page view they happen on.
            "url": _gather(pageview_url, pageview_of_event),
            "referrer": _gather(pageview_referrer, pageview_of_event),
            "ip": _gather(pool, visit_ip[visit_of_event]),
        }
    )
    return events.select(pl.all().gather(pl.Series(rng.permutation(n_events))))


def write(events: pl.DataFrame, out: Path) -> tuple[Path, Path]:
    """Write ``<out>.parquet`` and ``<out>.csv``; return their paths."""
    out.parent.mkdir(parents=True, exist_ok=True)
    parquet = out.with_name(out.name + ".parquet")
    csv = out.with_name(out.name + ".csv")
    events.write_parquet(parquet, statistics=False)
    events.write_csv(csv, datetime_format=CSV_TIME_FORMAT)
    return parquet, csv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000, help="number of events (rows)")
    parser.add_argument("--users", type=int, default=None, help="number of users (default: events / 10)")
    parser.add_argument("--ips", type=int, default=None, help="distinct IPs (default: events / 10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="output path without extension")
    args = parser.parse_args(argv)
    n_events: int = args.events
    n_users: int = args.users if args.users is not None else max(1, n_events // 10)
    n_ips: int = args.ips if args.ips is not None else max(1, n_events // 10)
    if n_events < 1 or n_users < 1 or n_ips < 1:
        parser.error("--events, --users and --ips must be positive")
    started = time.perf_counter()
    events = generate(n_events, n_users, n_ips, seed=args.seed)
    generated = time.perf_counter() - started
    parquet, csv = write(events, args.out)
    stats = events.select(
        pl.col("user_id").n_unique().alias("users"),
        pl.col("ip").n_unique().alias("ips"),
        (pl.col("ip").str.contains(":").mean() * 100).alias("ipv6_pct"),
        (pl.col("event") == "page_view").mean().mul(100).alias("pageview_pct"),
        pl.col("timestamp").min().alias("first"),
        pl.col("timestamp").max().alias("last"),
    ).row(0, named=True)
    print(
        f"{n_events:,} events, {stats['users']:,} users, {stats['ips']:,} distinct IPs "
        f"({stats['ipv6_pct']:.1f}% of events IPv6), {stats['pageview_pct']:.1f}% page views, "
        f"{stats['first']:%Y-%m-%d} to {stats['last']:%Y-%m-%d}; generated in {generated:.1f}s, "
        f"written in {time.perf_counter() - started - generated:.1f}s:\n  {parquet}\n  {csv}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
