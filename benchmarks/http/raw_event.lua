-- Raw-event score requests: a new transaction id each time, 5,000 cards, 500 merchants;
-- no event_time, so the service stamps the arrival time (always in order).
counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local body = string.format(
    '{"transaction_id":"w%d-%d","card_id":"card%d","merchant_id":"m%d","amount":%d.5,' ..
    '"channel":"online","device_id":"dev%d",' ..
    '"merchant_category":"grocery","lat":40.7,"lon":-74.0}',
    counter, math.random(1000000), counter % 5000, counter % 500, counter % 300,
    counter % 5000)
  return wrk.format(nil, nil, nil, body)
end
