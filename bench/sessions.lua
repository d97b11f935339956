-- wrk script of the HTTP benchmark: each request carries the next session cookie of a file
-- (one "name=value" a line; "-" for none) and is a POST /write for the given percentage of
-- requests, spread evenly, else a GET /read. Prints its figures as one JSON line at the end.
local cookies = {}
local write_percent = 0
local counter = 0

function init(args)
  if args[1] ~= "-" then
    for line in io.lines(args[1]) do cookies[#cookies + 1] = line end
  end
  write_percent = tonumber(args[2])
end

function request()
  counter = counter + 1
  local headers = {}
  if #cookies > 0 then headers["Cookie"] = cookies[counter % #cookies + 1] end
  local writes_before = math.floor((counter - 1) * write_percent / 100)
  if math.floor(counter * write_percent / 100) > writes_before then
    return wrk.format("POST", "/write", headers, "")
  end
  return wrk.format("GET", "/read", headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"p50": %d, "p99": %d, ' ..
    '"max": %d}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
