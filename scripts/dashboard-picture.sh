#!/usr/bin/env bash
# Draws docs/dashboard.png: the Grafana dashboard's panels (deploy/grafana/outbox-dashboard.json)
# over a few minutes of the running system under load, with a RabbitMQ disk alarm in the middle.
#
#   make up-detached && scripts/dashboard-picture.sh [seconds, default 180]
#
# Starts a private Prometheus (Debian's `prometheus` package, installed by `scripts/infra.sh
# tools`) that scrapes the three services every 2 s, sends orders (and line cancellations)
# through order-service's HTTP API from 4 clients, raises the disk alarm for 30 s half
# way (`ALARM=0` skips it), then renders each panel's queries with matplotlib (installed in a
# virtualenv under .local/). Grafana has no package here, so the picture is the dashboard's
# content and layout, not Grafana's look.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL_DIR=${OUTBOX_LOCAL_DIR:-$REPO/.local}
DURATION=${1:-180}
ORDER_URL=${ORDER_SERVICE_URL:-http://127.0.0.1:${ORDER_PORT:-3000}}
PROM_PORT=${PROMETHEUS_PORT:-9099}
PROM_DIR=$LOCAL_DIR/dashboard-prometheus
VENV=$LOCAL_DIR/venv-dashboard

log() { printf '[dashboard] %s\n' "$*" >&2; }
die() { printf '[dashboard] error: %s\n' "$*" >&2; exit 1; }

for target in "$ORDER_URL/health" "http://127.0.0.1:${SHIPMENT_PORT:-3001}/health" \
  "http://127.0.0.1:${RELAY_HTTP_PORT:-8080}/health"; do
  curl -fsS -o /dev/null "$target" || die "$target does not answer: start the system first (make up-detached)"
done
command -v prometheus >/dev/null || die "prometheus is missing: scripts/infra.sh tools installs it (as root)"
if [ ! -x "$VENV/bin/python" ]; then
  log "installing matplotlib in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet matplotlib
fi

rm -rf "$PROM_DIR" && mkdir -p "$PROM_DIR"
cat >"$PROM_DIR/prometheus.yml" <<YAML
global: {scrape_interval: 2s, evaluation_interval: 2s}
scrape_configs:
  - job_name: outbox-relay
    static_configs: [{targets: ['127.0.0.1:${RELAY_HTTP_PORT:-8080}']}]
  - job_name: order-service
    static_configs: [{targets: ['127.0.0.1:${ORDER_PORT:-3000}']}]
  - job_name: shipment-service
    static_configs: [{targets: ['127.0.0.1:${SHIPMENT_PORT:-3001}']}]
YAML
prometheus --config.file="$PROM_DIR/prometheus.yml" --storage.tsdb.path="$PROM_DIR/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$PROM_DIR/prometheus.log" 2>&1 &
PROM_PID=$!
trap 'kill "$PROM_PID" 2>/dev/null || true; "$REPO/scripts/infra.sh" rabbitmqctl set_disk_free_limit 50MB >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 50); do curl -fsS -o /dev/null "http://127.0.0.1:$PROM_PORT/-/ready" && break; sleep 0.2; done

start=$(date +%s)
log "load for ${DURATION}s against $ORDER_URL (Prometheus on :$PROM_PORT)"
"$VENV/bin/python" - "$ORDER_URL" "$DURATION" "$REPO/resources/data" <<'PY' &
import json, random, sys, threading, time, urllib.request
url, duration, data = sys.argv[1], float(sys.argv[2]), sys.argv[3]
create = open(f"{data}/create-order-request.json", "rb").read()
cancel = open(f"{data}/cancel-order-line-request.json", "rb").read()
end = time.time() + duration
def send(method, path, body):
    request = urllib.request.Request(url + path, data=body, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)
def worker():
    while time.time() < end:
        try:
            order = send("POST", "/orders", create)
            if random.random() < 0.3:
                line = order["lineItems"][0]["id"]
                send("PUT", f"/orders/{order['id']}/lines/{line}", cancel)
        except Exception:
            pass
        time.sleep(0.1)
threads = [threading.Thread(target=worker) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
PY
LOAD_PID=$!
if [ "${ALARM:-1}" = 1 ]; then
  sleep $((DURATION / 2 - 15))
  log "raising RabbitMQ's disk alarm for 30 s"
  "$REPO/scripts/infra.sh" rabbitmqctl set_disk_free_limit 1000000GB >/dev/null
  sleep 30
  "$REPO/scripts/infra.sh" rabbitmqctl set_disk_free_limit 50MB >/dev/null
  log "alarm cleared"
fi
wait "$LOAD_PID"
sleep 10
end=$(date +%s)
note="Load: 4 clients creating orders through the HTTP API (30% then cancel a line)."
[ "${ALARM:-1}" = 1 ] && note="$note RabbitMQ disk alarm for 30 s half way."
"$VENV/bin/python" "$REPO/scripts/render_dashboard.py" --prometheus "http://127.0.0.1:$PROM_PORT" \
  --start "$start" --end "$end" --out "$REPO/docs/dashboard.png" --note "$note"
