-- wrk script of `make cluster-bench`: bench/wrk/bench.lua (headers, varied URLs, the
-- BENCH_JSON summary with a count per status) plus:
--
--   BENCH_LUA        absolute path of bench/wrk/bench.lua (loaded first)
--   BENCH_HOSTS      "host:port,host:port,...": thread i connects to host i mod n, so
--                    one wrk with one thread per app host loads every host
--   BENCH_XFF_RANGE  N > 0: each request names a client drawn uniformly from N in
--                    X-Forwarded-For (10.a.b.c, c = i mod 256, ...): N distinct clients
--   BENCH_XFF_BASE   first client index (default 0)
--
-- It also counts 200 responses that carry no RateLimit header ("unchecked": a rate
-- limit that failed open) and prints them on a CLUSTER_JSON line from done().

dofile(os.getenv("BENCH_LUA"))

local hosts = {}
for part in string.gmatch(os.getenv("BENCH_HOSTS") or "", "[^,]+") do
   local host, port = string.match(part, "^(.+):(%d+)$")
   table.insert(hosts, wrk.lookup(host, port)[1])
end

local base_setup = setup
local created = 0
local my_threads = {}
function setup(thread)
   base_setup(thread)
   table.insert(my_threads, thread)
   if #hosts > 0 then
      thread.addr = hosts[(created % #hosts) + 1]
   end
   created = created + 1
end

local xff_range = tonumber(os.getenv("BENCH_XFF_RANGE") or "0") or 0
local xff_base = tonumber(os.getenv("BENCH_XFF_BASE") or "0") or 0
if xff_range > 0 then
   function init(args)
      math.randomseed(os.time() * 1000 + (thread_index or 0))
   end

   local headers = {}
   for name, value in pairs(wrk.headers) do
      headers[name] = value
   end

   function request()
      local i = xff_base + math.random(0, xff_range - 1)
      headers["X-Forwarded-For"] = string.format(
         "10.%d.%d.%d", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
      return wrk.format(nil, nil, headers)
   end
end

unchecked = 0
local base_response = response
function response(status, headers, body)
   base_response(status, headers, body)
   if status == 200 and headers["RateLimit"] == nil and headers["ratelimit"] == nil then
      unchecked = unchecked + 1
   end
end

local base_done = done
function done(summary, latency, requests)
   base_done(summary, latency, requests)
   local total = 0
   for _, thread in ipairs(my_threads) do
      total = total + (thread:get("unchecked") or 0)
   end
   io.write(string.format('CLUSTER_JSON {"unchecked_200": %d}\n', total))
end
