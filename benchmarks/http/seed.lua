wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"amount":120.0,"hour_of_day":14,"days_since_last_txn":1.5,"txn_count_24h":3,' ..
  '"distinct_merchants_24h":2,"avg_amount_7d":95.0,"channel_online":0}'
