#!/usr/bin/env bash
# Start (if needed) the services hyperpool uses on one machine and enable the RabbitMQ
# plugins it relies on: rabbitmq_management (queue depths for the local autoscaler, status)
# and rabbitmq_prometheus (per-queue metrics for the PrometheusRule and dashboards).
# Idempotent: safe to run before every `make test` / `make run`.
set -euo pipefail

need_pkg() {  # need_pkg COMMAND DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "services: installing $2" >&2
  if [ ! -f /var/lib/apt/lists/lock ] || [ -z "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v lock)" ]; then
    apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

need_pkg redis-server redis-server
need_pkg rabbitmq-server rabbitmq-server
# promtool (Prometheus' own checker) validates the recording rules and metric names in tests.
need_pkg promtool prometheus
# Montage for the main job (`make run`) and its CI test: mProjectPP, mAdd, mViewer... come from
# `montage`, mDiffFit and mConcatFit from `montage-gridtools`.
need_pkg mProjectPP montage
need_pkg mDiffFit montage-gridtools

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "services: starting redis-server" >&2
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi

if ! rabbitmqctl -q status >/dev/null 2>&1; then
  echo "services: starting rabbitmq-server" >&2
  rabbitmq-server -detached
  for _ in $(seq 1 60); do
    rabbitmqctl -q status >/dev/null 2>&1 && break
    sleep 1
  done
  rabbitmqctl await_startup --timeout 60 >/dev/null
fi

# Enabling already-enabled plugins is a no-op; --online applies them without a restart.
enabled=$(rabbitmq-plugins list -e -m 2>/dev/null || true)
for plugin in rabbitmq_management rabbitmq_prometheus; do
  if ! grep -qx "$plugin" <<<"$enabled"; then
    echo "services: enabling $plugin" >&2
    rabbitmq-plugins enable --online "$plugin" >/dev/null
  fi
done
# Long tasks vs RabbitMQ's delivery-acknowledgement timeout: with task_acks_late a message
# stays unacknowledged for the task's whole run, and RabbitMQ (consumer_timeout, 30 min by
# default) would close the channel and redeliver a task that is still running. Raise it to
# HYPERPOOL_CONSUMER_TIMEOUT_MS (default 24 h) at runtime; configs/rabbitmq.conf sets the same
# for compose and Kubernetes deployments.
timeout_ms="${HYPERPOOL_CONSUMER_TIMEOUT_MS:-86400000}"
rabbitmqctl -q eval "application:set_env(rabbit, consumer_timeout, ${timeout_ms})." >/dev/null
# Queue statistics every 1 s instead of 5 s for `hyperpool status` (the management API's
# collector only picks this up when the broker restarts; configs/rabbitmq.conf has it).
rabbitmqctl -q eval "application:set_env(rabbit, collect_statistics_interval, 1000)." >/dev/null
# Quorum queues refresh their counters every 500 ms instead of 5 s (queues declared from now
# on): the local autoscaler reads unacknowledged counts from :15692/metrics/detailed, so a
# finished pool reaches zero right after its cooldown (hyperpool/local/queue_metrics.py).
rabbitmqctl -q eval "application:set_env(rabbit, quorum_tick_interval, 500)." >/dev/null

for _ in $(seq 1 30); do
  if curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1 &&
     curl -fsS http://127.0.0.1:15692/metrics >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
echo "services: RabbitMQ management API (15672) or Prometheus endpoint (15692) not answering" >&2
exit 1
