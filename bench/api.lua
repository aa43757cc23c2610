-- wrk script for benchmark 3 (python -m bench runs it; see bench/README.md).
-- wrk ... -s bench/api.lua URL -- post             POST /api/v1/sessions, one fixed body
-- wrk ... -s bench/api.lua URL -- progress ID...   PUT /api/v1/sessions/ID/progress, cycling
--                                                  through the ids with a rising step
-- done() prints one line, "WRK_JSON {...}", for the harness to read.

local mode = "post"
local ids = {}
local counter = 0
local post_request = nil
local json_headers = { ["Content-Type"] = "application/json" }
local story = "A lighthouse keeper adopts a gull that can read the weather. "
    .. "Together they warn the harbour before every storm, until the gull falls silent."

function init(args)
  mode = args[1] or "post"
  for i = 2, #args do
    ids[#ids + 1] = args[i]
  end
  if mode == "progress" and #ids == 0 then
    error("progress mode needs session ids after the mode")
  end
  local body = string.format(
    '{"story_text": "%s", "media_type": "storybook", "num_scenes": 5}', story)
  post_request = wrk.format("POST", "/api/v1/sessions", json_headers, body)
end

function request()
  if mode == "post" then
    return post_request
  end
  counter = counter + 1
  local id = ids[(counter % #ids) + 1]
  -- total_steps at the API's bound (MAX_STEPS in sidecar/core/models.py), the step kept under it
  local step = counter % 1000000
  local body = string.format(
    '{"current_step": %d, "total_steps": 1000000, "description": "rendering frame %d"}',
    step, step)
  return wrk.format("PUT", "/api/v1/sessions/" .. id .. "/progress", json_headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
