"""DuckDB's side of examples/peers.rs: bulk-loads the CSV the example wrote, runs the same
dashboard questions and prints times and answers as JSON on stdout.

    python3 benches/peers_duckdb.py CALLS.csv DB_FILE REPS LAST7_FROM LAST7_TO TREND_FROM TREND_TO MODEL
"""

import json
import subprocess
import sys
import time

import duckdb


from peers_common import settle, time_queries


csv, db_file, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
last7_from, last7_to, trend_from, trend_to = (int(x) for x in sys.argv[4:8])
model = sys.argv[8]

COLUMNS = {
    "seq": "BIGINT", "ts": "BIGINT", "model": "VARCHAR", "key": "VARCHAR", "credential": "VARCHAR",
    "provider": "VARCHAR", "status": "INTEGER", "success": "INTEGER", "input": "BIGINT",
    "cache_read": "BIGINT", "output": "BIGINT", "reasoning": "BIGINT", "latency_ms": "BIGINT",
    "ttft_ms": "BIGINT", "stream": "INTEGER",
}

con = duckdb.connect(db_file)
t = time.perf_counter()
con.execute(f"CREATE TABLE calls AS SELECT * FROM read_csv(?, header = true, columns = {COLUMNS!r})", [csv])
con.execute("CHECKPOINT")
load_s = time.perf_counter() - t
settle()

QUERIES = {
    "totals": ("SELECT count(*), sum(input + cache_read + output + reasoning) FROM calls WHERE ts >= ? AND ts < ?",
               [last7_from, last7_to]),
    "models": ("SELECT model, count(*), sum(input + cache_read + output + reasoning), sum(1 - success) "
               "FROM calls GROUP BY model ORDER BY model", []),
    "top_keys": ("SELECT key, sum(input + cache_read + output + reasoning) AS t FROM calls "
                 "GROUP BY key ORDER BY t DESC LIMIT 10", []),
    "trend": ("SELECT (ts + 28800000) // 3600000 AS h, count(*) FROM calls WHERE ts >= ? AND ts < ? "
              "GROUP BY h ORDER BY h", [trend_from, trend_to]),
    "errors": ("SELECT seq FROM calls WHERE model = ? AND success = 0 ORDER BY seq DESC LIMIT 100", [model]),
}

out = {"version": duckdb.__version__, "load_s": load_s,
       "queries": time_queries(lambda sql, params: con.execute(sql, params).fetchall(), QUERIES, reps)}
con.close()
settle()

# Cold start: a new process (interpreter and `import duckdb` untimed) opens the database and
# answers the first totals query, as after a restart.
COLD = '''
import sys, time, duckdb
db_file, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t = time.perf_counter()
con = duckdb.connect(db_file)
n = con.execute("SELECT count(*) FROM calls WHERE ts >= ? AND ts < ?", [lo, hi]).fetchone()[0]
print(time.perf_counter() - t, n)
'''
cold = subprocess.run([sys.executable, "-c", COLD, db_file, str(last7_from - 10**12), str(last7_to + 10**12)],
                      check=True, capture_output=True, text=True).stdout.split()
out["cold_s"] = float(cold[0])
out["cold_count"] = int(cold[1])
json.dump(out, sys.stdout)
