-- wrk script: GETs the given URL with TOKEN, counting statuses.
-- TOKEN=... wrk -s benches/http/get.lua 'http://127.0.0.1:8317/api/console/stats'
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
local statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
done = function(summary, latency, requests)
  for s, n in pairs(statuses) do
    io.write(string.format("status %d: %d\n", s, n))
  end
  io.write(string.format("latency p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
