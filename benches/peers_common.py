"""What the Python peers of examples/peers.rs share: the page-cache settle and the timed runs."""

import os
import statistics
import time


def settle():
    """Flushes dirty pages and lets the writeback finish before timing (as for every engine)."""
    os.sync()
    time.sleep(1)


# As in examples/peers.rs: timed runs go on past `reps` until they add up to MIN_TIMED_S
# (at most MAX_RUNS).
MIN_TIMED_S = 0.2
MAX_RUNS = 1000


def time_queries(run, queries, reps):
    """Runs each (sql, params) once untimed, then at least `reps` times and until the runs add
    up to MIN_TIMED_S (at most MAX_RUNS); returns {name: {median_s, rows}} with rows as lists
    (numbers as int: sums may come back as Decimal)."""
    out = {}
    for name, (sql, params) in queries.items():
        run(sql, params)
        times = []
        rows = None
        while len(times) < max(reps, 1) or (sum(times) < MIN_TIMED_S and len(times) < MAX_RUNS):
            t = time.perf_counter()
            rows = run(sql, params)
            times.append(time.perf_counter() - t)
        out[name] = {"median_s": statistics.median(times),
                     "rows": [[v if isinstance(v, str) else int(v) for v in r] for r in rows]}
    return out
