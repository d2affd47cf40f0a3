#!/usr/bin/env bash
# Ask pingr whether anything is down, and fail loud when it cannot tell.
#
#   PINGR_URL=http://pingr.local:9009 PINGR_API_KEY=pingr_... ./alert-status.sh
#
# Prints OK / ALERT (with the failing targets) / ALARM (no usable answer) and exits
# 0 = all OK, 1 = alert, 2 = pingr could not be asked (down, wrong key, rate limited, ...).
# Exit 2 must be treated as an alarm too: a monitor you cannot reach is not "all OK".
set -uo pipefail

URL="${PINGR_URL:-http://localhost:9009}"
KEY="${PINGR_API_KEY:?set PINGR_API_KEY to a key with the read scope}"

body_file=$(mktemp)
trap 'rm -f "$body_file"' EXIT

# -s hides the progress bar; -o/-w keep the body and the HTTP status apart.
if ! code=$(curl -s --max-time 10 -o "$body_file" -w '%{http_code}' \
    -H "x-api-key: $KEY" "$URL/api/v1/alert-status"); then
  echo "ALARM: cannot reach pingr at $URL"
  exit 2
fi
body=$(cat "$body_file")

if [ "$code" != "200" ]; then
  detail=$(jq -r '.detail // empty' <<<"$body" 2>/dev/null)
  echo "ALARM: pingr answered HTTP $code${detail:+: $detail}"
  exit 2
fi

case "$(jq -r '.alert' <<<"$body" 2>/dev/null)" in
  false)
    echo "OK"
    exit 0
    ;;
  true)
    echo "ALERT: $(jq -r '.failing_count' <<<"$body") failing"
    jq -r '.failing_targets[] | "- \(.name): \(.failures)/\(.threshold) failures"' <<<"$body"
    exit 1
    ;;
  *)
    # A proxy's error page, an empty body, a different service on that port...
    echo "ALARM: unexpected answer from $URL"
    exit 2
    ;;
esac
