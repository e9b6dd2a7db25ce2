"""Issue 18, point 6: one attacker-written value must not cost quadratic time or memory.

The run happens in a child process whose peak memory is read back (a resource bound, not a timing);
before the fix, one referrer host of 60,000 labels made a run peak at 3.7 GB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from sessionize import attribution

CHILD = """
import json, resource, sys
import sessionize
result = sessionize.run([sys.argv[1]], no_geo=True)
row = result.sessions.row(0, named=True)
print(json.dumps({
    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "sessions": result.session_count,
    "traffic_source": row["traffic_source"],
    "referrer_host": row["referrer_host"],
}))
"""


def run_child(events: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(events)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


@pytest.mark.slow
def test_a_referrer_host_of_60000_labels_costs_linear_memory(tmp_path: Path) -> None:
    host = "a." * 60_000 + "example.com"
    events = tmp_path / "events.csv"
    pl.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "timestamp": ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z"],
            "url": ["https://shop.example/", "https://shop.example/"],
            "referrer": [f"https://{host}/path", "https://www.google.com/"],
        }
    ).write_csv(events)
    small = tmp_path / "small.csv"
    pl.read_csv(events).with_columns(
        pl.col("referrer").str.replace(host, "a.example.com", literal=True)
    ).write_csv(small)
    baseline = run_child(small)
    hostile = run_child(events)
    assert hostile["sessions"] == 2
    # A host longer than a DNS name can be is malformed: no host, no source.
    assert hostile["referrer_host"] is None and hostile["traffic_source"] is None
    assert float(hostile["peak_mib"]) < float(baseline["peak_mib"]) + 200


def test_long_but_valid_hosts_are_still_attributed() -> None:
    deep = ".".join(["x"] * 60) + ".google.com"  # 60 labels, 131 characters: a valid DNS name
    db = attribution.load_referers()
    landing = "https://shop.example/"
    result = attribution.classify_referrer(f"https://{deep}/search?q=shoes", landing_url=landing, db=db)
    assert result["source_name"] == "Google" and result["search_term"] == "shoes"
    too_long = "x." * 130 + "google.com"
    assert (
        attribution.classify_referrer(f"https://{too_long}/", landing_url=landing, db=db)["referrer_host"]
        is None
    )
