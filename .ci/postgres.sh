#!/usr/bin/env bash
# A throwaway PostgreSQL server for the `postgres`-marked tests (tests/test_store.py).
#
#   source .ci/postgres.sh                 # start (or reuse) it; exports NAS_TEST_POSTGRES_URL
#   eval "$(bash .ci/postgres.sh)"         # the same from a script that does not source
#   bash .ci/postgres.sh stop              # stop it and delete its data
#
# Installs the `postgresql` package with apt when no pg_ctl is found (Debian, as root),
# initialises a cluster in $NAS_PG_DIR (default /tmp/nas-ci-postgres) owned by the
# `postgres` user, and listens on 127.0.0.1 at the first free port from 55432 (plus a
# unix socket in that folder), with trust auth and fsync off: it holds test data only.
# Progress goes to stderr; stdout carries only the `export ...` line.

_nas_pg_dir="${NAS_PG_DIR:-${TMPDIR:-/tmp}/nas-ci-postgres}"

_nas_pg_bin() (
  set -euo pipefail
  if command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
    return
  fi
  # Debian keeps the server binaries off PATH, one folder per major version.
  local newest
  newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -z "$newest" ]]; then
    if [[ $(id -u) -ne 0 ]]; then
      echo "postgres.sh: no pg_ctl found and not root; install postgresql first" >&2
      exit 1
    fi
    echo "postgres.sh: installing postgresql with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
    newest=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$newest"
)

# Run a server command as the `postgres` user when we are root (postgres refuses root).
_nas_pg_as() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

_nas_pg_start() (
  set -euo pipefail
  local bin dir="$_nas_pg_dir" port
  bin=$(_nas_pg_bin)
  if [[ -f "$dir/data/postmaster.pid" ]] && _nas_pg_as "$bin/pg_ctl" status -D "$dir/data" >/dev/null 2>&1; then
    port=$(sed -n 4p "$dir/data/postmaster.pid")  # line 4 of postmaster.pid is the port
    echo "postgres.sh: reusing the server in $dir on port $port" >&2
  else
    rm -rf "$dir"
    mkdir -p "$dir"
    if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$dir"; fi
    chmod 700 "$dir"
    _nas_pg_as "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    port=55432
    # A port is taken when something answers on it.
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    _nas_pg_as "$bin/pg_ctl" start -w -t 60 -D "$dir/data" -l "$dir/server.log" \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      >&2 || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgres.sh: started PostgreSQL $("$bin/postgres" -V | awk '{print $3}') in $dir on port $port" >&2
  fi
  if [[ -z $(_nas_pg_as "$bin/psql" -h "$dir" -p "$port" -U postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'nas_test'") ]]; then
    _nas_pg_as "$bin/createdb" -h "$dir" -p "$port" -U postgres nas_test
  fi
  echo "postgresql://postgres@127.0.0.1:$port/nas_test"
)

_nas_pg_stop() (
  set -euo pipefail
  local bin dir="$_nas_pg_dir"
  bin=$(_nas_pg_bin)
  if [[ -d "$dir/data" ]]; then
    _nas_pg_as "$bin/pg_ctl" stop -D "$dir/data" -m fast >&2 || true
  fi
  rm -rf "$dir"
  echo "postgres.sh: stopped and removed $dir" >&2
)

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  # Sourced: start and export into the caller's shell; never `exit` it.
  if _nas_pg_url=$(_nas_pg_start); then
    export NAS_TEST_POSTGRES_URL="$_nas_pg_url"
    echo "export NAS_TEST_POSTGRES_URL=$NAS_TEST_POSTGRES_URL"
  else
    echo "postgres.sh: could not start PostgreSQL" >&2
    return 1
  fi
  unset _nas_pg_url
else
  set -euo pipefail
  case "${1:-start}" in
    start) url=$(_nas_pg_start); echo "export NAS_TEST_POSTGRES_URL=$url" ;;
    stop) _nas_pg_stop ;;
    *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
  esac
fi
