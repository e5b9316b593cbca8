-- Raw-event score requests: a new transaction id each time, 5,000 cards, 500 merchants;
-- no event_time, so the service stamps the arrival time (always in order).
--
-- Ids are unique per run and per wrk thread: wrk's math.random is unseeded, so the same in
-- every thread and run, and repeated ids would be answered as retries (stored answers).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  prefix = string.format("w%d-%d", os.time(), thread_id or 0)
  counter = 0
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
-- An API key when the service has authentication on (benchmarks/http/access_control.py).
local token = os.getenv("SENTINEL_BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
request = function()
  counter = counter + 1
  local body = string.format(
    '{"transaction_id":"%s-%d","card_id":"card%d","merchant_id":"m%d","amount":%d.5,' ..
    '"channel":"online","device_id":"dev%d",' ..
    '"merchant_category":"grocery","lat":40.7,"lon":-74.0}',
    prefix, counter, counter % 5000, counter % 500, counter % 300, counter % 5000)
  return wrk.format(nil, nil, nil, body)
end
