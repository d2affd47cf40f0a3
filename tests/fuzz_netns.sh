#!/bin/sh
# Runs inside `unshare --net` (tests/test_fuzz.py): a network namespace with only a loopback
# interface, so targets and webhooks the fuzzer creates cannot reach any other address.
# $1: work dir, $2: python, $3: schemathesis, $4: max examples per operation.
# Left out: /events (an endless stream), /containers and /resources/top (no Docker engine in
# here: those answer the documented 503 "Docker monitoring is off", which the no-5xx check would flag).
set -eu
dir=$1; py=$2; st=$3; n=$4
ip link set lo up
key=pingr_fuzz_admin_key_0123456789abcdef
cat > "$dir/pingr.yaml" <<YAML
host: 127.0.0.1
port: 9009
auth: {api_key: $key, rate_limit_per_minute: 100000, auth_failures_per_minute: 10000}
storage: {path: $dir/pingr.db}
targets:
  - {name: lo, type: tcp, host: 127.0.0.1, port: 9009, interval: 2s}
YAML
"$py" -m pingr run --config "$dir/pingr.yaml" 2> "$dir/pingr.log" &
pid=$!
i=0
until "$py" -c "import httpx; httpx.get('http://127.0.0.1:9009/api/v1/health', timeout=1)" 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 120 ] || { echo "pingr did not start"; cat "$dir/pingr.log"; exit 3; }
  sleep 0.5
done
status=0
cd "$dir"  # schemathesis keeps a cache of what it found in the working directory
"$st" run http://127.0.0.1:9009/openapi.json -H "x-api-key: $key" \
  --checks not_a_server_error,response_schema_conformance \
  --max-examples "$n" --request-timeout 20 --phases examples,coverage,fuzzing \
  --exclude-path-regex '/events$|/containers|/resources/' --generation-deterministic --no-color \
  > "$dir/schemathesis.txt" 2>&1 || status=$?
# pingr must still serve afterwards.
"$py" -c "import httpx, sys; r = httpx.get('http://127.0.0.1:9009/api/v1/health', timeout=10); sys.exit(0 if r.status_code in (200, 503) else 4)" || status=5
kill -TERM $pid
wait $pid || true
exit $status
