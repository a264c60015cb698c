-- wrk script for bench/compare: every request is a POST of BENCH_BODY with BENCH_HEADERS
-- ("name: value" lines), both from the environment, so one script serves every target.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end
