"""The traffic source of a referrer: its domain name without subdomains and public suffix.

Used by :mod:`sessionize.attribution`, which calls it once per distinct referrer. The Public Suffix
List comes from tldextract's bundled snapshot; nothing is fetched.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import urlsplit

import tldextract

DIRECT = "direct"

# suffix_list_urls=() and cache_dir=None: use the snapshot shipped in the package, never the network.
_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
#: With the list's private suffixes too (github.io, blogspot.com): a.github.io and b.github.io are two
#: sites, as a browser keeps their cookies apart.
_SITES = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True)


def referrer_host(referrer: str | None) -> str | None:
    """The lower-case host of a referrer URL (``None`` when there is none).

    >>> referrer_host("https://WWW.Google.co.uk/search?q=x")
    'www.google.co.uk'
    """
    if referrer is None or not referrer.strip():
        return None
    text = splittable(referrer)
    if text is None or not web_referrer(text):
        return None
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        return None
    host = valid_host(host)
    if parts.scheme == "android-app" and host:
        # android-app://com.google.android.gm/ names an app package: reverse it to a domain.
        host = ".".join(reversed(host.split(".")[:2]))
    return host


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
#: What follows ``host:`` in a bare ``host:port/path``: digits, then the path, query, fragment or the end.
_PORT = re.compile(r"[0-9]*(?:[/?#]|$)")


def _host_and_port(text: str, colon: int) -> bool:
    """Whether ``text``, whose first ``colon`` characters look like ``scheme:``, is a bare
    ``host:port`` instead (``localhost:3000/x``, ``shop.example:8080``; not ``tel:12345``)."""
    name = text[: colon - 1].lower()
    return ("." in name or name == "localhost") and _PORT.match(text, colon) is not None


def splittable(url: str) -> str | None:
    """``url`` as ``urlsplit`` should see it, or ``None`` for a URI that names no host.

    - A bare ``host/path`` (or ``host:port/path``) counts as a URL: ``//`` is put before it. A
      protocol-relative ``//host/path`` is one already.
    - A URI with a scheme and no ``//`` (``about:blank``, ``javascript:void(0)``, ``mailto:a@b.example``,
      ``data:...``) has no host: ``None``, rather than the scheme read as a host name.

    >>> splittable("t.co/abc"), splittable("//t.co/abc"), splittable("about:blank")
    ('//t.co/abc', '//t.co/abc', None)
    """
    text = url.strip()
    scheme = _SCHEME.match(text)
    if text.startswith("//") or (scheme is not None and text.startswith("//", scheme.end())):
        return text
    if scheme is not None and not _host_and_port(text, scheme.end()):
        return None
    return "//" + text


#: The schemes of a referrer that names a site or an app that sent the visitor, as Snowplow's referer parser
#: takes them (``validSchemes``: http, https, android-app); ``""``: a bare or protocol-relative
#: ``host/path``. A browser sends no other (review of stop 57: ``ws://www.google.com/search?q=x`` was
#: Organic Search, ``ftp://`` and ``chrome-extension://`` referrers Referral).
REFERRER_SCHEMES = ("", "http", "https", "android-app")


def web_referrer(text: str) -> bool:
    """Whether ``text`` (as :func:`splittable` gives it) has one of :data:`REFERRER_SCHEMES`."""
    scheme = _SCHEME.match(text)
    return scheme is None or text[: scheme.end() - 1].lower() in REFERRER_SCHEMES


#: The longest DNS name (RFC 1035: 253 characters in text form).
MAX_HOST_LENGTH = 253


def valid_host(host: str | None) -> str | None:
    """``host``, or None when it is empty or longer than a DNS name can be: such a referrer is
    malformed (attacker-written), and no suffix of it is looked up (which costs time and memory
    quadratic in its labels). A fully qualified name's final dot (``www.google.com.``) is left out: it
    is the same host, and the referer database and the internal domains name it without."""
    host = host.removesuffix(".") if host else host
    if not host or len(host) > MAX_HOST_LENGTH:
        return None
    return host


@functools.lru_cache(maxsize=65536)
def registered_domain(host: str) -> str | None:
    """The site a host belongs to: its domain under its public suffix, private ones included
    (``example.co.uk`` for ``shop.example.co.uk``, ``a.github.io`` for ``x.a.github.io``); None for an
    address, a bare suffix or a single label.

    >>> registered_domain("blog.example.com"), registered_domain("127.0.0.1")
    ('example.com', None)
    """
    extracted = _SITES(host)
    if not extracted.domain or not extracted.suffix:
        return None
    return f"{extracted.domain}.{extracted.suffix}"


@functools.lru_cache(maxsize=65536)
def traffic_source(referrer: str | None) -> str | None:
    """The referrer's domain name without subdomains and public suffix, lower case.

    ``direct`` when there is no referrer; ``None`` when a referrer is present but has no host.

    >>> traffic_source("https://l.facebook.com/l.php?u=x")
    'facebook'
    >>> traffic_source(None)
    'direct'
    """
    if referrer is None or not referrer.strip():
        return DIRECT
    host = referrer_host(referrer)
    if host is None:
        return None
    if ":" in host:
        # An IPv6 address (``https://[2001:db8::1]/``): the address, as an IPv4 one is (the public suffix
        # parser would read its first group as the name and the rest as a port).
        return host
    domain: str = _EXTRACT(host).domain
    return domain or host
