-- wrk script: POST multipart uploads, rotating over pre-built bodies, and check every answer.
-- Reads BENCH_BODIES (a folder of body_*.bin files) and BENCH_BOUNDARY from the environment.
local dir = os.getenv("BENCH_BODIES")
local boundary = os.getenv("BENCH_BOUNDARY")
local path = os.getenv("BENCH_PATH") or "/predict"
local bodies = {}
local i = 0
while true do
  local f = io.open(string.format("%s/body_%03d.bin", dir, i), "rb")
  if not f then break end
  bodies[#bodies + 1] = f:read("*all")
  f:close()
  i = i + 1
end
local headers = { ["Content-Type"] = "multipart/form-data; boundary=" .. boundary }
local counter = 0
local threads = {}
bad = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counter = math.random(#bodies)
end

function request()
  counter = counter % #bodies + 1
  return wrk.format("POST", path, headers, bodies[counter])
end

function response(status, hdrs, body)
  if status ~= 200 or not string.find(body, '"label"', 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local bad_total = 0
  for _, t in ipairs(threads) do bad_total = bad_total + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %.1f, "p99_us": %.1f, "mean_us": %.1f, "errors": %d, "bad": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    e.connect + e.read + e.write + e.timeout, bad_total))
end
