-- wrk script: GETs the given URL with TOKEN and prints latency percentiles.
-- TOKEN=... wrk -s benches/http/get.lua 'http://127.0.0.1:8317/api/console/stats'
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
done = function(summary, latency, requests)
  io.write(string.format("latency p50 %.2f ms, p99 %.2f ms, max %.2f ms; %d errors (non-2xx %d)\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
