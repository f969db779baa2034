-- wrk script: POST /v1/download/initiate with a small valid body.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"file_ids":[70000,70007,70001]}'
