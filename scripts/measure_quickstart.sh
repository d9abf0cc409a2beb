#!/usr/bin/env bash
# Measure `make quickstart` on a fresh clone: seconds until the gateway answers a chat request,
# the environment's size, and the peak memory of the install. Stops the instance afterwards.
#
#   scripts/measure_quickstart.sh [CLONE_DIR]          # default /tmp/kapell-quickstart
#   PIP_NO_CACHE_DIR=1 scripts/measure_quickstart.sh   # as on a machine that never ran pip
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-/tmp/kapell-quickstart}"
rm -rf "$dir"
git clone -q "$repo" "$dir"
cd "$dir"
log="$dir/quickstart.log"
start=$(date +%s.%N)
# A port of our own, so a kapell already running on 8000 does not get in the way.
setsid /usr/bin/time -v make quickstart >"$log" 2>&1 &
pid=$!
url=""
for _ in $(seq 1 600); do
    url=$(grep -o -m1 'Gateway: http://[0-9.:]*' "$log" | cut -d' ' -f2 || true)
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "make quickstart exited"; exit 1; }
    sleep 0.2
done
[ -n "$url" ] || { tail -20 "$log"; echo "no gateway URL after 120 s"; exit 1; }
reply=$(curl -s "$url/v1/chat/completions" -H 'Content-Type: application/json' \
    -d '{"model": "tiny-shakespeare", "messages": [{"role": "user", "content": "ROMEO:"}], "max_tokens": 60}')
end=$(date +%s.%N)
.venv/bin/kapell down >/dev/null 2>&1 || kill -INT -- "-$pid"
wait "$pid" || true
echo "reply: $reply"
echo "seconds from clone to first reply: $(echo "$end - $start" | bc)"
echo "environment: $(du -sh .venv | cut -f1)"
grep -E 'Maximum resident|Elapsed' "$log" || true
