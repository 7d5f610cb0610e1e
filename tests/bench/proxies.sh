# Shared by the proxy benchmarks (gateway.sh, cpu.sh): a private PostgreSQL cluster, PgBouncer
# in front of it, the benchmark policy, and Countersign in the production shape.
# Source it, then start Countersign instances with start_production.
#
# After sourcing: DATA (a scratch directory, removed on exit with everything started here),
# PG_BIN, PG_PORT, PASSWORD and UPSTREAM (the `bench` role, SCRAM, database `bench` at scale 10),
# BOUNCER_PORT, PGBOUNCER, "$DATA/policy.toml", free_port, and PIDS (processes to stop on exit).
#
# The cluster: max_connections 1100, SSL on, the `bench` role authenticating with SCRAM, so the
# machine's shared server is left alone. PgBouncer: session mode, SCRAM to clients and upstream,
# TLS offered to clients, `bench` allowed its statistics (SHOW STATS). The policy: three
# guardrails, a mask rule on resource `plain` that matches no pgbench column, and one on resource
# `masked` that hashes the column pgbench -S reads.
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
PASSWORD="bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
fi
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
ulimit -n 8192

DATA=$(mktemp -d)
chmod 755 "$DATA"
# PostgreSQL and PgBouncer run as `postgres` (both refuse root) and write here.
chown postgres "$DATA"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  [ -f "$DATA/pgbouncer.pid" ] && kill "$(cat "$DATA/pgbouncer.pid")" 2>/dev/null || true
  [ -d "$DATA/pg" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DATA/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$DATA"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- the private cluster -------------------------------------------------------------
PG_PORT=$(free_port)
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -keyout "$DATA/server.key" -out "$DATA/server.crt" >/dev/null 2>&1
chmod 600 "$DATA/server.key"
chown postgres "$DATA/server.key" "$DATA/server.crt"
mkdir "$DATA/pg" && chown postgres "$DATA/pg"
runuser -u postgres -- "$PG_BIN/initdb" -D "$DATA/pg" -U postgres --auth-local=trust >/dev/null
cat >>"$DATA/pg/postgresql.conf" <<CONF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DATA/pg'
max_connections = 1100
shared_buffers = 256MB
password_encryption = 'scram-sha-256'
ssl = on
ssl_cert_file = '$DATA/server.crt'
ssl_key_file = '$DATA/server.key'
CONF
cat >"$DATA/pg/pg_hba.conf" <<HBA
local all postgres trust
host all postgres 127.0.0.1/32 trust
host all bench 127.0.0.1/32 scram-sha-256
HBA
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DATA/pg" -l "$DATA/pg/server.log" -w start >/dev/null
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE ROLE bench LOGIN SUPERUSER PASSWORD '$PASSWORD'" \
  -c "CREATE DATABASE bench OWNER bench" >/dev/null
PGPASSWORD="$PASSWORD" pgbench -h 127.0.0.1 -p "$PG_PORT" -U bench -i -s 10 -q bench >/dev/null 2>&1
UPSTREAM="postgres://bench:$PASSWORD@127.0.0.1:$PG_PORT/bench?sslmode=disable"

# --- PgBouncer: session mode, SCRAM on both sides, TLS offered to clients ------------------
BOUNCER_PORT=$(free_port)
printf '"bench" "%s"\n' "$PASSWORD" >"$DATA/userlist.txt"
cat >"$DATA/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $DATA/userlist.txt
pool_mode = session
max_client_conn = 1200
default_pool_size = 1100
client_tls_sslmode = allow
client_tls_cert_file = $DATA/server.crt
client_tls_key_file = $DATA/server.key
stats_users = bench
pidfile = $DATA/pgbouncer.pid
logfile = $DATA/pgbouncer.log
INI
chown -R postgres "$DATA/pgbouncer.ini" "$DATA/userlist.txt"
touch "$DATA/pgbouncer.log" && chown postgres "$DATA/pgbouncer.log"
# runuser resets the soft open-files limit to 1,024; 1,000 idle clients need more.
runuser -u postgres -- sh -c 'ulimit -n 8192 && exec "$0" -d "$1"' "$PGBOUNCER" "$DATA/pgbouncer.ini"
for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -p "$BOUNCER_PORT" -q && break; sleep 0.1; done

# --- Countersign: `plain` (guardrails, mask rules matching nothing) and `masked` ----------
{ guardrail_policy; cat <<'TOML'; } >"$DATA/policy.toml"

# Matches nothing in the pgbench schema: the sessions on `plain` pay for the check only.
[[mask]]
name = "customer-ssn"
columns = ["public.customers.ssn", "*.*.card_number"]
style = "redact"
resources = ["plain"]

[[mask]]
name = "balances"
columns = ["public.pgbench_accounts.abalance"]
style = "hash"
resources = ["masked"]
TOML

# start_production NAME BIN [GATEWAY_TOML]: `countersign control-plane` (its store the database cs_NAME in the
# private cluster, resource `plain` in environment prod) and `countersign gateway` enrolled with
# a gateway token, the policy applied and a token minted for bench@example.com; GATEWAY_TOML,
# lines added to the gateway's config (e.g. `session_threads = 2`). Sets PORT[NAME]
# (the gateway's PostgreSQL port), METRICS[NAME] (its /metrics port), TOKEN[NAME], CPPID[NAME],
# GWPID[NAME], GRPC[NAME] (the control plane's gRPC address) and SECRET[NAME] (its gateway token).
declare -A PORT METRICS TOKEN CPPID GWPID GRPC SECRET
start_production() {
  local name=$1 bin=$2 extra=${3:-}
  local admin="bench-admin-token-0123456789-production-$name" secret="bench-gateway-token-0123456789-production-$name"
  local http grpc port metrics
  http=$(free_port); grpc=$(free_port); port=$(free_port); metrics=$(free_port)
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE cs_$name" >/dev/null
  cat >"$DATA/cp-$name.toml" <<TOML
http_addr = "127.0.0.1:$http"
grpc_addr = "127.0.0.1:$grpc"
database_url = "postgres://postgres@127.0.0.1:$PG_PORT/cs_$name"
admin_token = "$admin"
gateway_token = "$secret"

[[resource]]
name = "plain"
environment = "prod"
TOML
  cat >"$DATA/gw-$name.toml" <<TOML
gateway_id = "gw-$name"
environment = "prod"
control_plane_url = "http://127.0.0.1:$grpc"
gateway_token = "$secret"
pg_addr = "127.0.0.1:$port"
metrics_addr = "127.0.0.1:$metrics"
spool_dir = "$DATA/spool-$name"
$extra

[[upstream]]
name = "plain"
url = "$UPSTREAM"
TOML
  "$bin" control-plane --config "$DATA/cp-$name.toml" >"$DATA/cp-$name.log" 2>&1 &
  CPPID[$name]=$!; PIDS+=($!)
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$http/readyz" >/dev/null && break; sleep 0.2; done
  "$bin" gateway --config "$DATA/gw-$name.toml" >"$DATA/gw-$name.log" 2>&1 &
  GWPID[$name]=$!; PIDS+=($!)
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$metrics/readyz" >/dev/null && break; sleep 0.2; done
  curl -sf "http://127.0.0.1:$metrics/readyz" >/dev/null || { tail -20 "$DATA/cp-$name.log" "$DATA/gw-$name.log"; exit 1; }
  "$bin" policy apply --server "http://127.0.0.1:$http" --token "$admin" -f "$DATA/policy.toml" >/dev/null
  TOKEN[$name]=$("$bin" token create --server "http://127.0.0.1:$http" --admin-token "$admin" --identity bench@example.com --ttl 1h)
  PORT[$name]=$port
  METRICS[$name]=$metrics
  GRPC[$name]="http://127.0.0.1:$grpc"
  SECRET[$name]=$secret
}

# upload_drained NAME: waits until the gateway NAME has uploaded everything (its
# audit_events_uploaded counter stopped moving for half a second; at most a minute).
uploaded() { curl -sf "http://127.0.0.1:${METRICS[$1]}/metrics" | awk '$1 == "countersign_gateway_audit_events_uploaded_total" {print $2}'; }
upload_drained() {
  local last now
  last=$(uploaded "$1")
  for _ in $(seq 1 120); do
    sleep 0.5
    now=$(uploaded "$1")
    [ "$now" = "$last" ] && return 0
    last=$now
  done
}

# bench_env TARGET CMD [ARGS...]: CMD with PG* variables for direct, pgbouncer, or a
# production-shape instance started by start_production.
bench_env() {
  local target=$1; shift
  case $target in
    direct) PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=bench PGPASSWORD=$PASSWORD PGDATABASE=bench "$@" ;;
    pgbouncer) PGHOST=127.0.0.1 PGPORT=$BOUNCER_PORT PGUSER=bench PGPASSWORD=$PASSWORD PGDATABASE=bench "$@" ;;
    *) PGHOST=127.0.0.1 PGPORT=${PORT[$target]} PGUSER=bench@example.com PGPASSWORD=${TOKEN[$target]} PGDATABASE=plain "$@" ;;
  esac
}
