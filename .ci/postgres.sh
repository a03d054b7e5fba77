#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests of shared Optuna studies.
#
#   .ci/postgres.sh start DIR [PORT]   install PostgreSQL if missing, create a cluster in DIR,
#                                      start it on 127.0.0.1:PORT (default 54329) and print
#                                      its URL: postgresql://regbench@127.0.0.1:PORT/regbench
#   .ci/postgres.sh stop DIR           stop it (rm -rf DIR afterwards to throw it away)
#
# As root the server runs as the `postgres` user (PostgreSQL refuses to run as root).
# Authentication is `trust` and the server listens on 127.0.0.1 only: for tests, never for data.
# Set REGBENCH_NO_APT=1 to forbid installing. Exit status 3: PostgreSQL is not available.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
port=${3:-54329}
if [[ -z "$cmd" || -z "$dir" ]]; then
    echo "usage: $0 start|stop DIR [PORT]" >&2
    exit 2
fi

find_bin() {
    local candidate
    for candidate in /usr/lib/postgresql/*/bin; do
        if [[ -x "$candidate/initdb" && -x "$candidate/pg_ctl" ]]; then
            echo "$candidate"
        fi
    done | sort -V | tail -n 1
}

bindir=$(find_bin)
if [[ -z "$bindir" ]] && command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    bindir=$(dirname "$(command -v initdb)")
fi
if [[ -z "$bindir" && "$cmd" == start ]]; then
    if [[ "${REGBENCH_NO_APT:-}" == 1 || $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        echo "postgres.sh: PostgreSQL is not installed (apt-get install -y postgresql)" >&2
        exit 3
    fi
    echo "postgres.sh: installing PostgreSQL with apt-get" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2 || {
        echo "postgres.sh: apt-get install postgresql failed" >&2
        exit 3
    }
    bindir=$(find_bin)
fi
if [[ -z "$bindir" ]]; then
    echo "postgres.sh: no initdb/pg_ctl found" >&2
    exit 3
fi

as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "$cmd" in
start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
        chown postgres "$dir"
        # the server must be able to reach DIR through its parents
        parent=$dir
        while [[ "$parent" != / ]]; do
            parent=$(dirname "$parent")
            chmod o+x "$parent" 2>/dev/null || true
        done
    fi
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        as_owner "$bindir/initdb" -D "$dir/data" -U regbench -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            exit 3
        }
    fi
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100" start >&2 || {
        cat "$dir/server.log" >&2
        exit 3
    }
    if ! as_owner "$bindir/psql" -h 127.0.0.1 -p "$port" -U regbench -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname='regbench'" | grep -q 1; then
        as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U regbench regbench
    fi
    echo "postgresql://regbench@127.0.0.1:$port/regbench"
    ;;
stop)
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    fi
    ;;
*)
    echo "usage: $0 start|stop DIR [PORT]" >&2
    exit 2
    ;;
esac
