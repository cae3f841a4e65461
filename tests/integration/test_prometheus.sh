#!/usr/bin/env bash
# A real Prometheus server scrapes a running `loco run` node (issue 10). Two peers train a tiny model on
# 127.0.0.1; peer 1 serves [metrics] listen = 127.0.0.1:PORT. Debian's `prometheus` runs on loopback
# with a generated scrape config (every second) and a temporary storage directory; the test then asks
# Prometheus's HTTP API (/api/v1/query) for loco's series and checks their values are plausible: the
# target is up, loss finite in (0, 10), round >= 1, members alive = 2, bytes sent and received > 0,
# exchange-time histogram observations, a recent checkpoint, a rate of tokens. Skips (77) only when the
# prometheus binary is absent. Every process is killed by pid at the end.
set -u
cd "$(dirname "$0")/../.."
BIN=${LOCO_BIN:-$PWD/build/loco}
PY=${PYTHON:-/usr/bin/python3}
PROM=${PROMETHEUS:-$(command -v prometheus || true)}
[ -x "$BIN" ] || { echo "no loco binary at $BIN"; exit 77; }
[ -n "$PROM" ] && [ -x "$PROM" ] || { echo "skipped: no prometheus binary (apt-get install prometheus)"; exit 77; }
command -v curl >/dev/null || { echo "FAIL: curl is missing (deploy/setup.sh installs it)"; exit 1; }
W=$(mktemp -d /tmp/loco_it_prom.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$W"; }
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for f in "$W"/*/log* "$W/prometheus.log"; do [ -f "$f" ] && { echo "--- $f"; grep -v "INFO  train: step" "$f" | tail -n 12; }; done
    exit 1
}
. tests/integration/lib_swarm.sh
corpus_letters 5 2000 "$W/text.txt"
timeout 30 "$BIN" data --input "$W/text.txt" --out "$W/data" >/dev/null || fail "loco data"
cat >"$W/base.ini" <<INI
[run]
name = prom-test
[model]
layers = 1
d_model = 32
heads = 2
seq_len = 32
[train]
data = $W/data
batch = 4
steps = 100000
threads = 1
eval_every = 20
eval_batches = 2
checkpoint_every = 20
[outer]
inner_steps = 5
deadline_ms = 8000
[gossip]
period_ms = 300
INI

MPORT=$(port)
PPORT=$(port)
ENVS[1]="LOCO_TEST_STEP_DELAY_MS=20"
ENVS[2]="LOCO_TEST_STEP_DELAY_MS=20"
EXTRA[1]="--set metrics.listen=127.0.0.1:$MPORT"
swarm p 2
ENVS=()
EXTRA=()
serving() { grep -q "serving Prometheus metrics at http://127.0.0.1:$MPORT/metrics" "$W/p/log1"; }
wait_for 30 "peer 1 serves its metrics" serving
curl -sf "http://127.0.0.1:$MPORT/metrics" | grep -q '^# TYPE loco_loss gauge' || fail "GET /metrics lacks loco_loss"

cat >"$W/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: loco
    static_configs:
      - targets: ['127.0.0.1:$MPORT']
YML
"$PROM" --config.file="$W/prometheus.yml" --storage.tsdb.path="$W/tsdb" --web.listen-address="127.0.0.1:$PPORT" \
    --log.level=warn >"$W/prometheus.log" 2>&1 &
pids+=("$!")
API="http://127.0.0.1:$PPORT"
prom_ready() { curl -sf "$API/-/ready" >/dev/null; }
wait_for 60 "Prometheus ready" prom_ready

# q EXPR: the value of an instant query's first sample, empty when there is none.
q() { curl -sf --get "$API/api/v1/query" --data-urlencode "query=$1" |
      "$PY" -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'; }
# Prometheus has scraped the node after its second outer step with both members alive.
scraped() { [ "$(q 'loco_outer_round')" != "" ] && awk -v r="$(q 'loco_outer_round')" 'BEGIN { exit !(r >= 1) }' &&
            [ "$(q 'loco_members{state="alive"}')" = 2 ]; }
wait_for 90 "Prometheus holds loco_outer_round >= 1 and 2 alive members" scraped
sleep 2 # a couple more scrapes for rate()

"$PY" - "$API" "${ID[p1]:0:16}" <<'PY' || fail "Prometheus API checks (above)"
import json, math, sys, urllib.parse, urllib.request
api, me = sys.argv[1], sys.argv[2]
def query(expr):
    url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    r = json.load(urllib.request.urlopen(url, timeout=10))
    assert r["status"] == "success", r
    return r["data"]["result"]
def value(expr):
    res = query(expr)
    return float(res[0]["value"][1]) if res else float("nan")
series = sorted({s["metric"]["__name__"] for s in query('{__name__=~"loco_.+"}')})
print(f"  {len(series)} loco series in Prometheus: {' '.join(series)}")
want = ["loco_info", "loco_loss", "loco_tokens_per_second", "loco_compute_utilisation", "loco_outer_round",
        "loco_group_size", "loco_bytes_sent_total", "loco_bytes_received_total", "loco_exchange_seconds_bucket",
        "loco_wait_seconds_bucket", "loco_members", "loco_rejections_total", "loco_catchup_progress",
        "loco_checkpoint_age_seconds", "loco_inner_step", "loco_val_loss"]
info = query("loco_info")
checks = {f"series {n} present": n in series for n in want}
checks.update({
    "the target is up": value('up{job="loco"}') == 1,
    "loco_info names this peer and run": bool(info) and info[0]["metric"].get("peer") == me
        and info[0]["metric"].get("run") == "prom-test" and info[0]["metric"].get("algorithm") == "noloco",
    "loss finite in (0, 10)": 0 < value("loco_loss") < 10,
    "validation loss finite in (0, 10)": 0 < value("loco_val_loss") < 10,
    "round >= 1": value("loco_outer_round") >= 1,
    "members alive = 2": value('loco_members{state="alive"}') == 2,
    "members dead = 0": value('loco_members{state="dead"}') == 0,
    "group size 2": value("loco_group_size") == 2,
    "outer bytes sent > 0": value('loco_bytes_sent_total{type="outer"}') > 0,
    "outer bytes received > 0": value('loco_bytes_received_total{type="outer"}') > 0,
    "gossip bytes sent > 0": value('loco_bytes_sent_total{type="gossip"}') > 0,
    "exchange times observed": value("loco_exchange_seconds_count") >= 2,
    "exchange +Inf bucket = count": value('loco_exchange_seconds_bucket{le="+Inf"}') == value("loco_exchange_seconds_count"),
    "utilisation in (0, 1]": 0 < value("loco_compute_utilisation") <= 1,
    "checkpoint recent": 0 <= value("loco_checkpoint_age_seconds") < 120 and value("loco_checkpoint_step") > 0,
    "no rejections": value("sum(loco_rejections_total)") == 0,
    "steps advance (rate > 0)": value("rate(loco_outer_steps_total[5s])") > 0,
    "catch-up idle": value('loco_catchup_state{state="idle"}') == 1,
})
for k, v in checks.items():
    if not v: print("  not ok:", k)
alive, sent = value('loco_members{state="alive"}'), value('loco_bytes_sent_total{type="outer"}')
print(f"  loss {value('loco_loss'):.3f}, round {value('loco_outer_round'):.0f}, alive {alive:.0f}, "
      f"outer bytes sent {sent:.0f}, exchanges {value('loco_exchange_seconds_count'):.0f}")
sys.exit(0 if all(checks.values()) else 1)
PY
# Nothing secret in the exposition: no key material, no token data.
curl -sf "http://127.0.0.1:$MPORT/metrics" >"$W/scrape.txt" || fail "second GET /metrics"
seed=$(awk '/^seed =/ {print $3}' "$W/p/k1")
[ ${#seed} -eq 64 ] || fail "cannot read the key's seed from $W/p/k1"
grep -qi "${seed:0:16}" "$W/scrape.txt" && fail "the exposition contains key material"
grep -q "${ID[p1]}" "$W/scrape.txt" && fail "the exposition carries the full peer id (only a prefix is expected)"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/")" = 404 ] || fail "/ is not 404"
echo "ok: Prometheus scraped loco's series with plausible values"
