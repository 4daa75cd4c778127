"""Postgres's side of examples/peers.rs, the way LiteLLM keeps its spend logs: a row per call,
inserted in transactions of 10 000 rows, indexes on time, model and key, GROUP BY at query time.

    python3 benches/peers_postgres.py CALLS.csv WORK_DIR REPS LAST7_FROM LAST7_TO TREND_FROM TREND_TO MODEL

Starts its own throwaway server (Debian's postgresql package: initdb + pg_ctl from
/usr/lib/postgresql/*/bin, run as the `postgres` user when started as root) in WORK_DIR/pg, on
a Unix socket only, with the package's default settings; stops it and prints times and answers
as JSON on stdout. Needs `pip install "psycopg[binary]"`.
"""

import csv
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import psycopg


from peers_common import settle, time_queries


csv_path, work_dir, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
last7_from, last7_to, trend_from, trend_to = (int(x) for x in sys.argv[4:8])
model = sys.argv[8]
BATCH = 10_000

bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
if not bins:
    sys.exit("postgres binaries not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
bin_dir = bins[-1]
data = os.path.join(work_dir, "pg")
as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def pg(*args):
    subprocess.run(as_user + [os.path.join(bin_dir, args[0]), *args[1:]], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


os.makedirs(data)
if as_user:
    shutil.chown(work_dir, "postgres")
    shutil.chown(data, "postgres")
pg("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
opts = f"-c listen_addresses='' -c unix_socket_directories='{data}'"


def start():
    pg("pg_ctl", "-D", data, "-o", opts, "-l", os.path.join(data, "log"), "-w", "start")


def stop():
    pg("pg_ctl", "-D", data, "-m", "fast", "-w", "stop")


def connect():
    return psycopg.connect(host=data, user="postgres", dbname="postgres")


def batches():
    with open(csv_path, newline="") as f:
        rows = csv.reader(f)
        next(rows)
        batch = []
        for r in rows:
            batch.append((int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], int(r[6]), int(r[7]), int(r[8]), int(r[9]),
                          int(r[10]), int(r[11]), int(r[12]), int(r[13]) if r[13] else None, int(r[14])))
            if len(batch) == BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


start()
try:
    con = connect()
    con.execute(
        "CREATE TABLE calls (seq BIGINT PRIMARY KEY, ts BIGINT NOT NULL, model TEXT NOT NULL, key TEXT NOT NULL,"
        " credential TEXT NOT NULL, provider TEXT NOT NULL, status INTEGER NOT NULL, success INTEGER NOT NULL,"
        " input BIGINT NOT NULL, cache_read BIGINT NOT NULL, output BIGINT NOT NULL, reasoning BIGINT NOT NULL,"
        " latency_ms BIGINT NOT NULL, ttft_ms BIGINT, stream INTEGER NOT NULL)")
    con.execute("CREATE INDEX calls_ts ON calls(ts)")
    con.execute("CREATE INDEX calls_model ON calls(model)")
    con.execute("CREATE INDEX calls_key ON calls(key)")
    con.commit()
    # Only the inserts and commits are timed, not reading the CSV.
    load_s = 0.0
    n = 0
    for batch in batches():
        t = time.perf_counter()
        with con.cursor() as cur:
            cur.executemany("INSERT INTO calls VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", batch)
        con.commit()
        load_s += time.perf_counter() - t
        n += len(batch)
    con.autocommit = True
    con.execute("VACUUM ANALYZE calls")
    version = con.execute("SHOW server_version").fetchone()[0]
    disk = con.execute("SELECT pg_total_relation_size('calls')").fetchone()[0]
    settle()

    queries = {
        "totals": ("SELECT count(*), sum(input + cache_read + output + reasoning) FROM calls WHERE ts >= %s AND ts < %s",
                   [last7_from, last7_to]),
        "models": ("SELECT model, count(*), sum(input + cache_read + output + reasoning), sum(1 - success) "
                   "FROM calls GROUP BY model ORDER BY model COLLATE \"C\"", []),
        "top_keys": ("SELECT key, sum(input + cache_read + output + reasoning) AS t FROM calls "
                     "GROUP BY key ORDER BY t DESC LIMIT 10", []),
        "trend": ("SELECT (ts + 28800000) / 3600000 AS h, count(*) FROM calls WHERE ts >= %s AND ts < %s "
                  "GROUP BY h ORDER BY h", [trend_from, trend_to]),
        "errors": ("SELECT seq FROM calls WHERE model = %s AND success = 0 ORDER BY seq DESC LIMIT 100", [model]),
    }
    out = {"version": version, "load_s": load_s, "rows_loaded": n, "disk_bytes": disk, "queries": {}}
    out["queries"] = time_queries(lambda sql, params: con.execute(sql, params).fetchall(), queries, reps)
    con.close()

    # Cold start: restart the server (page cache warm), connect, first totals query.
    stop()
    settle()
    t = time.perf_counter()
    start()
    con = connect()
    first = con.execute("SELECT count(*) FROM calls WHERE ts >= %s AND ts < %s",
                        [last7_from - 10**12, last7_to + 10**12]).fetchone()[0]
    out["cold_s"] = time.perf_counter() - t
    out["cold_count"] = first
    con.close()
finally:
    subprocess.run(as_user + [os.path.join(bin_dir, "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(data, ignore_errors=True)
json.dump(out, sys.stdout)
