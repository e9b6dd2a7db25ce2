"""Generate the sample clickstream in ``sample_data/``: ``events.csv`` and ``events.parquet``.

The data is a synthetic but realistic event log of the e-commerce/blog site
``https://shop.example.com``: about 400 users and about 5,000 events between 2026-11-02T00:00:00Z and
2026-11-05T00:00:00Z. Both files hold the same rows, shuffled (real exports are not sorted), with the
columns ``event_id, user_id, timestamp, event, url, referrer, ip, session_id, user_agent``.

What is in it, so that sessionization has something to get right:

* Skewed users: most make one or two visits, a few make many. Inside a visit events are seconds to
  a few minutes apart; between visits there are hours, except for a handful of gaps placed on
  purpose just under 30 minutes inside a visit (e.g. 29m50s) and just over 30 minutes between
  visits (e.g. 30m10s), so the default 30-minute timeout decides the outcome.
* About 15% of users are a mobile app that sends its own ``session_id`` (``app-s-<n>``) on every
  event of a visit; some of their visits pause for more than 30 minutes, and a couple of their
  visits start only minutes after the previous one, so the client id must win over the timeout.
* The landing page view of a visit carries the external referrer (search, social, other sites,
  web mail) or none (direct); later page views carry the previous page as an internal referrer, and
  other events the referrer of the page they happen on. About 25% of visits land on a URL with UTM
  parameters (including a ``gclid``/``fbclid``/``msclkid`` and a percent-encoded campaign name).
* ``user_id`` values such as ``u00042`` have leading zeros, and a few are long numbers such as
  ``1000000000001``: readers must keep the column as strings.
* IPs are ~80% IPv4 and ~20% IPv6, and include the MaxMind GeoIP2 test-database addresses
  (81.2.69.142, 2001:218::1, ...) plus a few IPv4-mapped IPv6 addresses (``::ffff:81.2.69.160``).
* One or two users are Googlebot.

In the CSV every column is a string and missing values are empty. In the Parquet file
``timestamp`` is ``Datetime("us", "UTC")``, the other columns are strings and missing values are null.

The output depends only on the seed (``random.Random(20261127)``): rerunning produces byte-identical
files. Regenerate from the repository root with::

    python sample_data/generate.py
"""

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import quote

import polars as pl

SEED: Final = 20261127
SITE: Final = "https://shop.example.com"
OUT_DIR: Final = Path(__file__).parent
CSV_PATH: Final = OUT_DIR / "events.csv"
PARQUET_PATH: Final = OUT_DIR / "events.parquet"

WINDOW_START: Final = datetime(2026, 11, 2, tzinfo=UTC)
WINDOW_END: Final = datetime(2026, 11, 5, tzinfo=UTC)

SECOND: Final = 1_000
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR
WINDOW_MS: Final = (WINDOW_END - WINDOW_START) // timedelta(milliseconds=1)

N_USERS: Final = 400
COLUMNS: Final = (
    "event_id",
    "user_id",
    "timestamp",
    "event",
    "url",
    "referrer",
    "ip",
    "session_id",
    "user_agent",
)

# Inside a visit no gap exceeds this, except the deliberate long pauses below.
MAX_DWELL_MS: Final = 6 * MINUTE
# Between visits the gap is at least this, except the deliberate short gaps below.
MIN_VISIT_GAP_MS: Final = HOUR
# Deliberate gaps inside one visit of a web user: just under the 30-minute timeout.
NEAR_TIMEOUT_GAPS_MS: Final = (
    29 * MINUTE + 50 * SECOND,
    29 * MINUTE + 50 * SECOND,
    29 * MINUTE + 55 * SECOND,
    29 * MINUTE + 40 * SECOND,
    29 * MINUTE + 59 * SECOND + 500,
    29 * MINUTE + 30 * SECOND,
)
# Deliberate gaps between two visits of a web user: just over the 30-minute timeout.
JUST_OVER_TIMEOUT_GAPS_MS: Final = (
    30 * MINUTE + 10 * SECOND,
    30 * MINUTE + 10 * SECOND,
    30 * MINUTE + 5 * SECOND,
    30 * MINUTE + 30 * SECOND,
    30 * MINUTE + 500,
    31 * MINUTE,
)
# Share of app visits (with two or more pages) that pause for longer than the timeout.
APP_LONG_PAUSE_SHARE: Final = 0.25
# App visits that start a new client session only minutes after the previous one ended.
APP_SHORT_GAP_VISITS: Final = 2

T = TypeVar("T")
Weighted = Sequence[tuple[T, float]]


def pick(rng: random.Random, options: Weighted[T]) -> T:
    """One of ``options``, chosen with the given weights."""
    values = [value for value, _ in options]
    weights = [weight for _, weight in options]
    return rng.choices(values, weights=weights, k=1)[0]


def random_token(rng: random.Random, length: int, alphabet: str) -> str:
    return "".join(rng.choices(alphabet, k=length))


BASE64URL: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
HEX: Final = "0123456789abcdef"

# --------------------------------------------------------------------------------------------------
# User agents
# --------------------------------------------------------------------------------------------------

DESKTOP_UAS: Final[Weighted[str]] = (
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/142.0.0.0 Safari/537.36",
        0.36,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/142.0.0.0 Safari/537.36",
        0.18,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/26.1 Safari/605.1.15",
        0.14,
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/142.0.0.0 Safari/537.36 Edg/142.0.0.0",
        0.14,
    ),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:145.0) Gecko/20100101 Firefox/145.0", 0.10),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:145.0) Gecko/20100101 Firefox/145.0", 0.08),
)
MOBILE_UAS: Final[Weighted[str]] = (
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/26.1 Mobile/15E148 Safari/604.1",
        0.45,
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/142.0.0.0 Mobile Safari/537.36",
        0.35,
    ),
    (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/28.0 Chrome/130.0.0.0 Mobile Safari/537.36",
        0.10,
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/26.1 Mobile/15E148 Safari/604.1",
        0.10,
    ),
)
# The mobile app renders the site in a web view.
APP_UAS: Final[Weighted[str]] = (
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Mobile/15E148",
        0.55,
    ),
    (
        "Mozilla/5.0 (Linux; Android 15; Pixel 8 Build/AP4A.250105.002; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/142.0.7444.102 Mobile Safari/537.36",
        0.45,
    ),
)
GOOGLEBOT_UAS: Final = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/142.0.7444.175 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
)
GOOGLEBOT_IPS: Final = ("66.249.66.1", "66.249.66.77", "66.249.79.12", "66.249.79.204")

# --------------------------------------------------------------------------------------------------
# IP addresses
# --------------------------------------------------------------------------------------------------

# Addresses in the MaxMind GeoIP2/GeoLite2 test databases, so geo lookups in tests find them.
MAXMIND_TEST_IPS: Final = (
    "81.2.69.142",
    "81.2.69.160",
    "2.125.160.216",
    "216.160.83.56",
    "89.160.20.112",
    "67.43.156.1",
    "2001:218::1",
    "2a02:ec80::1",
    "::ffff:81.2.69.160",
    "::ffff:216.160.83.56",
    "::ffff:89.160.20.112",
)
# First octets of IPv4 blocks that are allocated to ISPs and hosting providers.
IPV4_FIRST_OCTETS: Final = (
    2, 5, 24, 31, 37, 46, 50, 62, 63, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 82, 83, 84,
    85, 86, 87, 88, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 107, 108, 109, 151, 173, 176, 178, 185,
    188, 193, 194, 195, 212, 213, 217,
)  # fmt: skip
# /32 prefixes of IPv6 blocks used by large residential and mobile ISPs.
IPV6_PREFIXES: Final = (
    0x2A0023C5, 0x2A020C7C, 0x26001700, 0x26014000, 0x200300E2, 0x2A01CB00, 0x200108A0, 0x24063003,
    0x26043D08, 0x2A02A450,
)  # fmt: skip


def random_ipv4(rng: random.Random) -> str:
    while True:
        first = rng.choice(IPV4_FIRST_OCTETS)
        address = ipaddress.IPv4Address(
            f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        )
        if address.is_global:
            return str(address)


def random_ipv6(rng: random.Random) -> str:
    while True:
        prefix = rng.choice(IPV6_PREFIXES)
        address = ipaddress.IPv6Address((prefix << 96) | rng.getrandbits(96))
        if address.is_global:
            return address.compressed


def random_ip(rng: random.Random, ipv6: bool) -> str:
    return random_ipv6(rng) if ipv6 else random_ipv4(rng)


# --------------------------------------------------------------------------------------------------
# Pages and navigation
# --------------------------------------------------------------------------------------------------

PRODUCTS: Final = (
    "shoe-42",
    "shoe-17",
    "trail-runner-3",
    "rain-jacket-7",
    "merino-socks-3pack",
    "water-bottle-750ml",
    "headlamp-200",
    "gps-watch-5",
    "running-shorts-2",
    "hydration-vest-1",
)
BLOG_POSTS: Final = (
    "how-to-choose-running-shoes",
    "marathon-training-plan",
    "black-friday-gift-guide",
    "trail-running-for-beginners",
    "what-to-wear-in-the-rain",
    "10k-in-8-weeks",
)

# Page kinds and where a visitor goes next from each.
NAVIGATION: Final[dict[str, Weighted[str]]] = {
    "home": (
        ("listing", 0.35),
        ("product", 0.25),
        ("blog", 0.12),
        ("post", 0.1),
        ("pricing", 0.12),
        ("about", 0.06),
    ),
    "listing": (("product", 0.75), ("category", 0.15), ("home", 0.1)),
    "category": (("product", 0.85), ("listing", 0.15)),
    "product": (
        ("product", 0.35),
        ("listing", 0.2),
        ("cart", 0.12),
        ("post", 0.1),
        ("home", 0.13),
        ("pricing", 0.1),
    ),
    "blog": (("post", 0.8), ("home", 0.2)),
    "post": (("post", 0.35), ("product", 0.35), ("blog", 0.1), ("home", 0.1), ("signup", 0.1)),
    "cart": (("checkout", 0.65), ("product", 0.25), ("home", 0.1)),
    "checkout": (("product", 0.5), ("home", 0.3), ("cart", 0.2)),
    "pricing": (("signup", 0.4), ("home", 0.3), ("listing", 0.3)),
    "signup": (("home", 0.5), ("listing", 0.5)),
    "about": (("home", 0.6), ("blog", 0.4)),
}
CATEGORIES: Final = ("shoes", "apparel", "accessories")


def page_path(rng: random.Random, kind: str) -> str:
    """A path on the site for a page kind."""
    match kind:
        case "home":
            return "/"
        case "listing":
            return "/products"
        case "category":
            return f"/products?category={rng.choice(CATEGORIES)}"
        case "product":
            return f"/products/{rng.choice(PRODUCTS)}"
        case "blog":
            return "/blog/"
        case "post":
            return f"/blog/{rng.choice(BLOG_POSTS)}"
        case "cart" | "checkout" | "pricing" | "signup" | "about":
            return f"/{kind}"
    raise ValueError(kind)


# --------------------------------------------------------------------------------------------------
# Traffic sources and campaigns
# --------------------------------------------------------------------------------------------------

SOURCES: Final[Weighted[str]] = (
    ("direct", 0.30),
    ("search", 0.32),
    ("social", 0.18),
    ("other", 0.10),
    ("email", 0.10),
)
SEARCH_REFERRERS: Final[Weighted[str]] = (
    ("https://www.google.com/", 0.45),
    ("https://www.google.co.uk/search?q=running+shoes", 0.08),
    ("https://www.google.de/", 0.07),
    ("https://www.bing.com/search?q=best+trail+running+shoes&form=QBLH", 0.14),
    ("https://duckduckgo.com/", 0.12),
    ("https://search.yahoo.com/search?p=waterproof+running+jacket", 0.06),
    ("https://www.ecosia.org/", 0.08),
)
SOCIAL_REFERRERS: Final[Weighted[str]] = (
    ("https://www.facebook.com/", 0.18),
    ("l.facebook.com", 0.14),  # built from the landing URL, see facebook_link_shim()
    ("https://t.co/abc123", 0.14),
    ("https://www.linkedin.com/feed/", 0.1),
    ("https://www.reddit.com/r/running/comments/1gq2x7z/best_budget_trail_shoes/", 0.16),
    ("https://www.quora.com/What-is-the-best-running-shoe-for-flat-feet", 0.1),
    ("https://news.ycombinator.com/item?id=42187211", 0.08),
    ("https://www.instagram.com/", 0.1),
)
OTHER_REFERRERS: Final[Weighted[str]] = (
    ("https://blog.example.org/post/1", 0.35),
    ("https://medium.com/@runnerjane/my-first-ultra-3f2a9c1b7e4d", 0.3),
    ("https://forum.example.net/t/shoe-recommendations/8812", 0.2),
    ("https://en.wikipedia.org/wiki/Trail_running", 0.15),
)
EMAIL_REFERRERS: Final[Weighted[str]] = (
    ("https://mail.google.com/mail/u/0/", 0.6),
    ("https://outlook.live.com/", 0.25),
    ("android-app://com.google.android.gm/", 0.15),
)
LANDING_KINDS: Final[dict[str, Weighted[str]]] = {
    "direct": (("home", 0.6), ("product", 0.2), ("pricing", 0.1), ("post", 0.1)),
    "search": (("product", 0.45), ("post", 0.3), ("home", 0.2), ("listing", 0.05)),
    "social": (("post", 0.55), ("product", 0.35), ("home", 0.1)),
    "other": (("post", 0.5), ("product", 0.4), ("home", 0.1)),
    "email": (("product", 0.6), ("home", 0.2), ("pricing", 0.1), ("post", 0.1)),
}
NEWSLETTER_CAMPAIGNS: Final[Weighted[str]] = (
    ("black_friday", 0.55),
    ("cyber_week", 0.25),
    ("summer%20sale", 0.12),  # an old newsletter link with a percent-encoded space
    ("Black%20Friday%20%E2%80%93%20Early%20Access", 0.08),  # percent-encoded UTF-8 en dash
)


def newsletter_utm(rng: random.Random) -> str:
    return f"utm_source=newsletter&utm_medium=email&utm_campaign={pick(rng, NEWSLETTER_CAMPAIGNS)}"


def google_ads_utm(rng: random.Random) -> str:
    campaign, term = rng.choice(
        (("brand", "shop+example"), ("generic", "running+shoes"), ("generic", "trail+shoes"))
    )
    gclid = "Cj0KCQiA" + random_token(rng, 64, BASE64URL)
    return f"utm_source=google&utm_medium=cpc&utm_campaign={campaign}&utm_term={term}&gclid={gclid}"


def bing_ads_utm(rng: random.Random) -> str:
    return f"utm_source=bing&utm_medium=cpc&utm_campaign=generic&msclkid={random_token(rng, 32, HEX)}"


def facebook_ads_utm(rng: random.Random) -> str:
    campaign = rng.choice(("retarget", "black_friday"))
    fbclid = "IwAR" + random_token(rng, 58, BASE64URL)
    return f"utm_source=facebook&utm_medium=paid_social&utm_campaign={campaign}&fbclid={fbclid}"


def facebook_link_shim(rng: random.Random, landing_url: str) -> str:
    """The referrer Facebook sends for an outbound link: its link shim wrapping the target URL."""
    return (
        f"https://l.facebook.com/l.php?u={quote(landing_url, safe='')}&h=AT{random_token(rng, 26, BASE64URL)}"
    )


def with_query(path: str, query: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}{query}"


@dataclass(frozen=True)
class Entry:
    """How a visit arrives: its landing page kind and URL and its external referrer."""

    kind: str
    url: str
    referrer: str | None


def choose_entry(rng: random.Random, is_app: bool) -> Entry:
    """The traffic source, landing page and (possibly UTM-tagged) landing URL of a new visit."""
    if is_app:
        roll = rng.random()
        if roll < 0.15:  # opened from a push notification
            kind = pick(rng, (("product", 0.7), ("home", 0.3)))
            push = "utm_source=push&utm_medium=app&utm_campaign=black_friday"
            return Entry(kind, SITE + with_query(page_path(rng, kind), push), None)
        if roll < 0.85:  # opened the app
            kind = pick(rng, (("home", 0.8), ("listing", 0.2)))
            return Entry(kind, SITE + page_path(rng, kind), None)
    source = pick(rng, SOURCES)
    kind = pick(rng, LANDING_KINDS[source])
    path = page_path(rng, kind)
    referrer: str | None = None
    query: str | None = None
    match source:
        case "direct":
            if rng.random() < 0.12:  # newsletter opened in a mail client that sends no referrer
                query = newsletter_utm(rng)
        case "search":
            referrer = pick(rng, SEARCH_REFERRERS)
            if "google." in referrer and rng.random() < 0.35:
                query = google_ads_utm(rng)
            elif "bing." in referrer and rng.random() < 0.45:
                query = bing_ads_utm(rng)
        case "social":
            referrer = pick(rng, SOCIAL_REFERRERS)
            if "facebook." in referrer and rng.random() < 0.55:
                query = facebook_ads_utm(rng)
            elif referrer.startswith("https://t.co/") and rng.random() < 0.3:
                query = "utm_source=twitter&utm_medium=social&utm_campaign=launch"
        case "other":
            referrer = pick(rng, OTHER_REFERRERS)
            if rng.random() < 0.25:
                query = "utm_source=partner_blog&utm_medium=referral&utm_campaign=affiliate"
        case "email":
            referrer = pick(rng, EMAIL_REFERRERS)
            if rng.random() < 0.85:
                query = newsletter_utm(rng)
    url = SITE + (with_query(path, query) if query else path)
    if referrer == "l.facebook.com":
        referrer = facebook_link_shim(rng, url)
    return Entry(kind, url, referrer)


# --------------------------------------------------------------------------------------------------
# Users, visits and events
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    user_id: str
    user_agent: str
    ip: str
    ipv6: bool
    is_app: bool = False
    is_bot: bool = False


@dataclass
class VisitPlan:
    """Deliberate features of one visit, decided before its events are drawn."""

    near_timeout_gap_ms: int | None = None  # a pause just under 30 minutes inside the visit
    gap_before_ms: int | None = None  # an exact gap after the end of the previous visit
    app_long_pause: bool = False  # an app visit that pauses for longer than 30 minutes


@dataclass
class UserPlan:
    user: User
    visits: list[VisitPlan] = field(default_factory=list)


@dataclass(frozen=True)
class Event:
    user_id: str
    ts_ms: int  # milliseconds since WINDOW_START
    event: str
    url: str
    referrer: str | None
    ip: str
    session_id: str | None
    user_agent: str


# (offset in ms from the start of the visit, event name, url, referrer)
VisitEvent = tuple[int, str, str, str | None]

VISITS_PER_USER: Final[Weighted[int]] = (
    (1, 0.55),
    (2, 0.22),
    (3, 0.09),
    (4, 0.05),
    (5, 0.025),
    (6, 0.015),
    (8, 0.012),
    (10, 0.01),
    (14, 0.008),
    (20, 0.006),
    (25, 0.004),
)
# Visit starts follow the daily rhythm of a mostly European and American audience (UTC hours).
HOUR_WEIGHTS: Final = (
    3, 2, 2, 1, 1, 1, 2, 4, 6, 8, 9, 10, 11, 11, 12, 13, 14, 14, 13, 12, 10, 8, 6, 4,
)  # fmt: skip


def make_user_ids(rng: random.Random) -> list[str]:
    """400 distinct ids: ``u`` plus five digits (``u00042`` among them) and five long numeric ids."""
    numeric = ["1000000000001", "1000000000002", "1000000000137", "1000000004711", "1000000098765"]
    numbers = rng.sample(range(1, 20_000), N_USERS - len(numeric) - 1)
    numbers = [42, *(n for n in numbers if n != 42)][: N_USERS - len(numeric)]
    ids = [f"u{n:05d}" for n in numbers] + numeric
    rng.shuffle(ids)
    return ids


def make_users(rng: random.Random) -> list[User]:
    ids = make_user_ids(rng)
    n_app = round(N_USERS * 0.15)
    n_bot = 2
    roles = ["bot"] * n_bot + ["app"] * n_app + ["web"] * (N_USERS - n_app - n_bot)
    rng.shuffle(roles)
    users: list[User] = []
    for user_id, role in zip(ids, roles, strict=True):
        ipv6 = rng.random() < 0.2
        if role == "bot":
            ua = GOOGLEBOT_UAS[len([u for u in users if u.is_bot]) % len(GOOGLEBOT_UAS)]
            users.append(User(user_id, ua, rng.choice(GOOGLEBOT_IPS), ipv6=False, is_bot=True))
        elif role == "app":
            users.append(User(user_id, pick(rng, APP_UAS), random_ip(rng, ipv6), ipv6, is_app=True))
        else:
            uas = MOBILE_UAS if rng.random() < 0.45 else DESKTOP_UAS
            users.append(User(user_id, pick(rng, uas), random_ip(rng, ipv6), ipv6))
    # Give the MaxMind test addresses to some human users as their usual address.
    humans = [i for i, u in enumerate(users) if not u.is_bot]
    for index, ip in zip(rng.sample(humans, len(MAXMIND_TEST_IPS)), MAXMIND_TEST_IPS, strict=True):
        old = users[index]
        users[index] = User(old.user_id, old.user_agent, ip, ":" in ip, old.is_app, old.is_bot)
    return users


def plan_visits(rng: random.Random, users: list[User]) -> list[UserPlan]:
    plans = []
    for user in users:
        n = rng.randint(3, 6) if user.is_bot else pick(rng, VISITS_PER_USER)
        plans.append(UserPlan(user, [VisitPlan() for _ in range(n)]))
    web = [p for p in plans if not p.user.is_app and not p.user.is_bot]
    app = [p for p in plans if p.user.is_app]
    # Pauses just under the timeout inside visits of web users.
    for plan, gap in zip(rng.sample(web, len(NEAR_TIMEOUT_GAPS_MS)), NEAR_TIMEOUT_GAPS_MS, strict=True):
        rng.choice(plan.visits).near_timeout_gap_ms = gap
    # Gaps just over the timeout between two visits of web users (from users with 2-4 visits, so that
    # the window has room for them).
    candidates = [p for p in web if 2 <= len(p.visits) <= 4]
    for plan, gap in zip(
        rng.sample(candidates, len(JUST_OVER_TIMEOUT_GAPS_MS)), JUST_OVER_TIMEOUT_GAPS_MS, strict=True
    ):
        plan.visits[rng.randrange(1, len(plan.visits))].gap_before_ms = gap
    # App visits that pause longer than the timeout, and app visits soon after the previous one.
    for plan in app:
        for visit in plan.visits:
            visit.app_long_pause = rng.random() < APP_LONG_PAUSE_SHARE
    for plan in rng.sample([p for p in app if 2 <= len(p.visits) <= 4], APP_SHORT_GAP_VISITS):
        plan.visits[rng.randrange(1, len(plan.visits))].gap_before_ms = rng.randint(8, 15) * MINUTE
    return plans


def dwell_ms(rng: random.Random) -> int:
    """Time on a page before the next page view: seconds to a few minutes."""
    return min(MAX_DWELL_MS, max(3 * SECOND, round(rng.lognormvariate(10.6, 0.9))))  # median ~40 s


def short_gap_ms(rng: random.Random) -> int:
    """Time between interactions on one page."""
    return rng.randint(800, 45 * SECOND)


def render_visit(rng: random.Random, user: User, plan: VisitPlan) -> list[VisitEvent]:
    """The events of a human visit, with times relative to the visit start."""
    entry = choose_entry(rng, user.is_app)
    forced_pause = plan.near_timeout_gap_ms is not None or plan.app_long_pause
    bounce = rng.random() < 0.35 and not forced_pause
    n_pages = 1 if bounce else min(18, 2 + int(rng.expovariate(0.35)))
    pause_before = rng.randrange(1, n_pages) if forced_pause else None

    events: list[VisitEvent] = []
    kind, url, referrer = entry.kind, entry.url, entry.referrer
    t = 0
    in_cart = False
    for page in range(n_pages):
        if page > 0:
            added = bool(events) and events[-1][1] == "add_to_cart"
            kind = "cart" if added and rng.random() < 0.6 else pick(rng, NAVIGATION[kind])
            referrer, url = url, SITE + page_path(rng, kind)
            if page == pause_before and plan.near_timeout_gap_ms is not None:
                t = events[-1][0] + plan.near_timeout_gap_ms
            elif page == pause_before:  # app long pause
                t = events[-1][0] + rng.randint(35 * MINUTE, 2 * HOUR)
            else:
                t = max(t + dwell_ms(rng), events[-1][0] + rng.randint(1 * SECOND, 5 * SECOND))
        events.append((t, "page_view", url, referrer))
        last = t
        scroll_share = {"post": 0.7, "product": 0.4, "blog": 0.3}.get(kind, 0.15)
        for _ in range(2 if kind == "post" and rng.random() < 0.3 else 1):
            if rng.random() < scroll_share:
                last += short_gap_ms(rng)
                events.append((last, "scroll", url, referrer))
        if rng.random() < 0.3:
            last += short_gap_ms(rng)
            events.append((last, "click", url, referrer))
        if kind == "product" and rng.random() < 0.18:
            last += short_gap_ms(rng)
            events.append((last, "add_to_cart", url, referrer))
            in_cart = True
        if kind == "checkout" and in_cart and rng.random() < 0.7:
            last += rng.randint(20 * SECOND, 3 * MINUTE)
            events.append((last, "purchase", url, referrer))
            in_cart = False
        if kind == "signup" and rng.random() < 0.5:
            last += rng.randint(15 * SECOND, 2 * MINUTE)
            events.append((last, "sign_up", url, referrer))
    return events


ALL_PAGE_KINDS: Final = ("home", "listing", "category", "product", "blog", "post", "pricing", "about")


def render_bot_visit(rng: random.Random) -> list[VisitEvent]:
    """A Googlebot crawl: a burst of page views without referrer."""
    events: list[VisitEvent] = []
    t = 0
    for _ in range(rng.randint(15, 40)):
        events.append((t, "page_view", SITE + page_path(rng, rng.choice(ALL_PAGE_KINDS)), None))
        t += rng.randint(1 * SECOND, 20 * SECOND)
    return events


def random_visit_start(rng: random.Random) -> int:
    """A time in the window, following the daily rhythm."""
    hour = pick(rng, [(h, float(w)) for h, w in enumerate(HOUR_WEIGHTS)])
    return rng.randrange(3) * DAY + hour * HOUR + rng.randrange(HOUR)


def user_events(rng: random.Random, plan: UserPlan, app_session_counter: list[int]) -> list[Event]:
    user = plan.user
    starts = sorted(random_visit_start(rng) for _ in plan.visits)
    events: list[Event] = []
    previous_end: int | None = None
    for visit, candidate in zip(plan.visits, starts, strict=True):
        rendered = render_bot_visit(rng) if user.is_bot else render_visit(rng, user, visit)
        duration = rendered[-1][0]
        if previous_end is None:
            start = min(candidate, WINDOW_MS - duration - rng.randint(1, 90) * MINUTE)
        elif visit.gap_before_ms is not None:
            start = previous_end + visit.gap_before_ms
        else:
            start = max(candidate, previous_end + MIN_VISIT_GAP_MS + rng.randrange(2 * HOUR))
        if start + duration >= WINDOW_MS:
            break  # no room left in the window for this and later visits
        if user.is_bot:
            ip = rng.choice(GOOGLEBOT_IPS)
        elif rng.random() < 0.85:
            ip = user.ip
        else:  # another network: mobile data, office, a friend's wifi
            ip = random_ip(rng, user.ipv6 if rng.random() < 0.7 else not user.ipv6)
        session_id: str | None = None
        if user.is_app:
            app_session_counter[0] += 1
            session_id = f"app-s-{app_session_counter[0]}"
        for offset, name, url, referrer in rendered:
            events.append(
                Event(user.user_id, start + offset, name, url, referrer, ip, session_id, user.user_agent)
            )
        previous_end = start + duration
    return events


def format_timestamp(ts_ms: int) -> str:
    moment = WINDOW_START + timedelta(milliseconds=ts_ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ts_ms % SECOND:03d}Z"


def generate(rng: random.Random) -> list[dict[str, str | None]]:
    """All rows, with event ids in time order, shuffled."""
    users = make_users(rng)
    plans = plan_visits(rng, users)
    app_session_counter = [0]
    events = [event for plan in plans for event in user_events(rng, plan, app_session_counter)]
    events.sort(key=lambda e: (e.ts_ms, e.user_id))
    rows: list[dict[str, str | None]] = [
        {
            "event_id": f"evt_{number:06d}",
            "user_id": e.user_id,
            "timestamp": format_timestamp(e.ts_ms),
            "event": e.event,
            "url": e.url,
            "referrer": e.referrer,
            "ip": e.ip,
            "session_id": e.session_id,
            "user_agent": e.user_agent,
        }
        for number, e in enumerate(events, start=1)
    ]
    rng.shuffle(rows)
    return rows


def main() -> None:
    rows = generate(random.Random(SEED))
    columns = {column: [row[column] for row in rows] for column in COLUMNS}
    frame = pl.DataFrame(columns, schema=dict.fromkeys(COLUMNS, pl.String))
    frame.write_csv(CSV_PATH)
    typed = frame.with_columns(
        pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ", time_unit="us", time_zone="UTC")
    )
    typed.write_parquet(PARQUET_PATH)
    first, last = min(r["timestamp"] or "" for r in rows), max(r["timestamp"] or "" for r in rows)
    print(
        f"{frame.height} events, {frame['user_id'].n_unique()} users, {first} .. {last} "
        f"-> {CSV_PATH.name}, {PARQUET_PATH.name}"
    )


if __name__ == "__main__":
    main()
