"""Write the incremental states of ``tests/data/states/`` (see ``tests/data/README.md``): run it with the
sessionize of the release whose states they stand for, from this directory::

    cd tests/data/states && PYTHONPATH=<that checkout> python make.py

Each state is the first run over ``a.csv`` with its options (``OPTIONS`` below, also written to
``<name>/options.json`` for the tests); ``b.csv`` continues its open sessions. Paths are relative, so that
the state records ``a.csv`` as the input it processed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

HEADER = "user_id,timestamp,url,referrer,event,login,engagement_ms,ignore_ref,page_view_id,sent_at\n"
#: Run 1: u1 and u2 still in a session at its end (10:05), u3's session final.
A = (
    "u1,2024-05-01T10:00:00Z,https://shop.example/,https://www.google.com/,page_view,,1200,false,pv1,"
    "2024-05-01T10:00:01Z\n"
    "u1,2024-05-01T10:00:30Z,https://shop.example/,,page_ping,,0,false,pv1,2024-05-01T10:00:31Z\n"
    "u1,2024-05-01T10:01:00Z,https://shop.example/cart,https://shop.example/,page_view,L1,800,false,pv2,"
    "2024-05-01T10:01:00Z\n"
    "u2,2024-05-01T10:05:00Z,https://shop.example/,https://www.facebook.com/,page_view,,500,false,pv3,"
    "2024-05-01T10:05:02Z\n"
    "u3,2024-05-01T08:00:00Z,https://shop.example/a,,page_view,,300,false,pv4,2024-05-01T08:00:00Z\n"
)
#: Run 2: u1's and u2's sessions go on (their partition is rewritten), u4 is new.
B = (
    "u2,2024-05-01T10:20:00Z,https://shop.example/p,,page_view,L2,900,false,pv5,2024-05-01T10:20:00Z\n"
    "u1,2024-05-01T10:10:00Z,https://shop.example/pay,https://pay.example/,page_view,,700,true,pv6,"
    "2024-05-01T10:10:00Z\n"
    "u1,2024-05-01T10:10:20Z,https://shop.example/pay,,page_ping,,0,false,pv6,2024-05-01T10:10:25Z\n"
    "u4,2024-05-01T10:30:00Z,https://shop.example/,https://www.bing.com/,page_view,,100,false,pv7,"
    "2024-05-01T10:30:00Z\n"
)
COMMON = ["--no-geo", "--valid-until", "2100-01-01"]
OPTIONS = {
    # The usual cron state: no GeoIP database, every other option at its default.
    "plain": COMMON,
    # Roles that only a flag switches on, and an inert --min-visit-length (no heartbeats).
    "roles": [
        *COMMON,
        *("--stitch-col", "login", "--engagement-time-col", "engagement_ms"),
        *("--ignore-referrer-col", "ignore_ref", "--min-visit-length", "9s"),
    ],
    # Heartbeats, timed on a column of their own.
    "heartbeats": [
        *COMMON,
        *("--heartbeat-events", "page_ping", "--heartbeat-interval", "20s"),
        *("--heartbeat-time-col", "sent_at", "--page-view-id-col", "page_view_id"),
    ],
}


def main() -> None:
    for name, options in OPTIONS.items():
        here = Path(name)
        shutil.rmtree(here, ignore_errors=True)
        here.mkdir()
        (here / "a.csv").write_text(HEADER + A, encoding="utf-8")
        (here / "b.csv").write_text(HEADER + B, encoding="utf-8")
        (here / "options.json").write_text(json.dumps(options) + "\n", encoding="utf-8")
        command = [sys.executable, "-m", "sessionize", "run", "a.csv", "--state", "state"]
        subprocess.run([*command, "--output-dir", "out", *options, "-q"], cwd=here, check=True)
        (here / "state" / ".lock").unlink()


if __name__ == "__main__":
    main()
