#!/bin/sh
# Times each operator verb against the quick-start pool (3 Python http.server workers,
# proxy on 127.0.0.1:8080), each under its own wrk run (-t1 -c4, started 0.5 s before and
# stopped 0.5 s after the operation): one line per operation with its duration and wrk's
# requests and errors. As root from the repository, after a build:
#     sh tests/bench/operations.sh [BIN_DIR]     # default target/release, else target/debug
# Needs wrk, curl and python3; uses the quick start's addresses (127.0.0.1:8080, :9460).
set -eu
BIN=${1:-target/release}
[ -x "$BIN/poold" ] || BIN=target/debug
DIR=$(mktemp -d /tmp/poold-ops.XXXXXX)
PID=
cleanup() {
  pkill -INT -f "wrk -t1 -c4 -d600s http://127.0.0.1:8080/" 2>/dev/null || true
  for p in $(pgrep -f "poold --config $DIR/poold.toml" || true); do kill -TERM "$p" 2>/dev/null || true; done
  while pgrep -f "poold --config $DIR/poold.toml" > /dev/null; do sleep 0.1; done
  rm -rf "$DIR"
}
trap cleanup EXIT
sed -e "s#/run/poold#$DIR/state#g" config/quickstart.toml > "$DIR/poold.toml"
SOCK="$DIR/state/poold.sock"
ctl() { "$BIN/poolctl" --socket "$SOCK" "$@"; }
now() { date +%s%N; }
# Until the service has N ready workers, every worker ready on generation GEN (default: the
# service's), none draining or starting.
settled() {
  while ! ctl --json status | python3 -c "
import json,sys
s=json.load(sys.stdin)[0]; gen=int('${2:-0}') or s['generation']
ok = s['ready']==$1 and len(s['workers'])==$1 and all(w['state']=='ready' and w['generation']==gen for w in s['workers'])
sys.exit(0 if ok else 1)"; do sleep 0.02; done
}
step() { # NAME COMMAND...
  name=$1; shift
  wrk -t1 -c4 -d600s http://127.0.0.1:8080/ > "$DIR/wrk.txt" 2>&1 &
  wrk=$!
  sleep 0.5
  t=$(now)
  "$@"
  took=$(( ($(now) - t) / 1000000 ))
  sleep 0.5
  kill -INT $wrk; wait $wrk || true
  requests=$(awk '/requests in/ {print $1}' "$DIR/wrk.txt")
  errors=$(grep -E 'Socket errors|Non-2xx' "$DIR/wrk.txt" | tr -s ' ' | tr '\n' ';' || true)
  echo "| $name | $took ms | $requests | ${errors:-0} |"
}
start() { "$BIN/poold" --config "$DIR/poold.toml" 2>> "$DIR/poold.log" & PID=$!; }
start
while ! [ -S "$SOCK" ]; do sleep 0.05; done
settled 3
echo "| operation | took | requests | wrk errors |"
echo "|---|---|---|---|"
step "recycle hello --wait (3 workers, surge)" sh -c "'$BIN/poolctl' --socket '$SOCK' recycle hello --wait > /dev/null"
step "recycle hello/1 --wait" sh -c "'$BIN/poolctl' --socket '$SOCK' recycle hello/1 --wait > /dev/null"
step "drain hello/0" sh -c "'$BIN/poolctl' --socket '$SOCK' drain hello/0 > /dev/null"
step "undrain hello/0" sh -c "'$BIN/poolctl' --socket '$SOCK' undrain hello/0 > /dev/null"
scale_up() { ctl scale hello 5 > /dev/null; settled 5; }
step "scale hello 5 (until 5 ready)" scale_up
scale_down() { ctl scale hello 3 > /dev/null; settled 3; }
step "scale hello 3 (until the 2 drained and stopped)" scale_down
step "drain hello (readiness 503)" sh -c "'$BIN/poolctl' --socket '$SOCK' drain hello > /dev/null"
step "undrain hello" sh -c "'$BIN/poolctl' --socket '$SOCK' undrain hello > /dev/null"
deploy() { ctl deploy hello --rootfs host --wait > /dev/null; settled 3; }
step "deploy hello --rootfs host --wait (3 rolled)" deploy
sed -i 's#"8080"\]#"8080"]\nenv = { OPS = "2" }#' "$DIR/poold.toml"
reload() {
  gen=$(ctl --json status | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['generation'])")
  ctl reload > /dev/null; settled 3 $((gen + 1))
}
step "reload, command env changed (until 3 ready on the new generation)" reload
upgrade() { ctl upgrade > /dev/null; while kill -0 $PID 2>/dev/null; do sleep 0.01; done; }
step "upgrade (until the old poold is gone)" upgrade
NEW=$(cat "$DIR/state/poold.lock" 2>/dev/null | tr -dc 0-9)
[ -n "$NEW" ] || NEW=$(pgrep -f "poold --config $DIR/poold.toml" | head -1)
restart() {
  kill -9 "$NEW"; start
  while ! ctl status > /dev/null 2>&1; do sleep 0.01; done
  settled 3
}
step "kill -9 poold, start again (until 3 adopted workers ready)" restart
echo "workers spawned: $(grep -c 'worker spawned' "$DIR/poold.log"), adopted: $(grep -c 'worker adopted' "$DIR/poold.log")"
kill -TERM $PID; wait $PID || true
