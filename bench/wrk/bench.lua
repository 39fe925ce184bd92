-- wrk script of `make bench`: headers and varied URLs from the environment, and a
-- one-line JSON summary (with a count per status code) printed by done().
--
-- Environment (all optional):
--   BENCH_HEADERS        header lines, "Name: value", separated by "\n"
--                        (the bearer token, the user header of the micro-apps)
--   BENCH_PATH_TEMPLATE  a path with "{n}" in it, e.g. "/api/v1/users?page={n}";
--   BENCH_PATH_RANGE     ... and n is drawn uniformly from 1..BENCH_PATH_RANGE per request.
--                        Without both, every request is the URL given on the command line,
--                        built once (the cheapest way for wrk).
--
-- The summary line starts with "BENCH_JSON " so the harness can find it in wrk's
-- output. Latencies are in microseconds. Status counts come from response(), which
-- runs in each thread's Lua state, so done() collects them through thread:get().

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_index", #threads)  -- a distinct random seed per thread
end

local raw_headers = os.getenv("BENCH_HEADERS")
if raw_headers and raw_headers ~= "" then
   for line in string.gmatch(raw_headers, "[^\n]+") do
      local name, value = string.match(line, "^%s*([^:]+):%s*(.-)%s*$")
      if name then
         wrk.headers[name] = value
      end
   end
end

local template = os.getenv("BENCH_PATH_TEMPLATE")
local range = tonumber(os.getenv("BENCH_PATH_RANGE") or "0") or 0
if template and template ~= "" and range > 0 then
   function init(args)
      math.randomseed(os.time() * 1000 + (thread_index or 0))
   end

   function request()
      local path = string.gsub(template, "{n}", tostring(math.random(1, range)))
      return wrk.format(nil, path)
   end
end

statuses = {}

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local total = {}
   for _, thread in ipairs(threads) do
      local counts = thread:get("statuses") or {}
      for status, n in pairs(counts) do
         total[status] = (total[status] or 0) + n
      end
   end
   local parts = {}
   for status, n in pairs(total) do
      table.insert(parts, string.format('"%d": %d', status, n))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}, ' ..
      '"statuses": {%s}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.max,
      latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9),
      table.concat(parts, ", ")))
end
