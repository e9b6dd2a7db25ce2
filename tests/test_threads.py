"""The session build's own threads never wait on Polars' workers (review40, finding 1).

``_session_rows`` runs two steps on threads beside the rest. Polars may call it on one of its own
workers, when it runs two parts of a plan side by side (two lazy session tables concatenated or joined):
a worker waiting there for threads that need a worker themselves waited for ever once every worker did.
Each case runs in a child process with a time limit, with one and with two Polars threads.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import SAMPLE_DATA

CASES = {
    "concat": "pl.concat([a, b], how='diagonal_relaxed')",
    "join": "a.join(b, on='session_id', how='left', suffix='_b')",
}

SCRIPT = """
import sys
import polars as pl
import sessionize

frame = pl.read_csv(sys.argv[1], infer_schema=False)
a = sessionize.sessionize(frame, no_geo=True, heartbeat_events="page_ping")
b = sessionize.sessionize(frame.head(2000), no_geo=True, count_events=["purchase"])
print({plan}.collect(engine="in-memory").height)
"""


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_two_lazy_session_tables_in_one_plan_finish(case: str, threads: str) -> None:
    script = SCRIPT.format(plan=CASES[case])
    env = {**os.environ, "POLARS_MAX_THREADS": threads}
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, str(SAMPLE_DATA / "events.csv")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case} with POLARS_MAX_THREADS={threads} did not finish in 60 s")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) > 0
