-- wrk script: POSTs the file named by BODY to the ingest route with TOKEN.
-- BODY=... TOKEN=... wrk -s benches/http/post_file.lua http://127.0.0.1:8317/api/ingest/events
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/x-ndjson"

