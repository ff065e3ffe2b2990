# A throwaway PostgreSQL server for the tests, sourced by .ci/run (or by hand:
#   source .ci/postgres.sh && start_test_postgres && trap stop_test_postgres EXIT).
#
# start_test_postgres: initdb into a fresh temporary folder, start the server on a free
# loopback port (TCP on 127.0.0.1 only; its socket in that folder), make a role
# "explorer" (password, CREATEDB: the tests make a database per test) and its database
# "explorer_test", and export EXPLORER_TEST_POSTGRES_URL. As root the server runs as the
# postgres user (initdb refuses root); otherwise as the user running this. Without the
# PostgreSQL server binaries it says so and returns 0: the tests then skip, or fail
# under CI. An EXPLORER_TEST_POSTGRES_URL already set is used as it is.
# stop_test_postgres: stop the server (pg_ctl stop -m fast) and remove the folder; safe
# to call when nothing was started, and more than once.

TEST_PG_DIR=""
TEST_PG_BIN=""

postgres_bin_dir() {  # the newest installed server's binaries, or nothing
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
        echo "$dir"
    elif command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        dirname "$(command -v initdb)"
    fi
}

_as_pg() {  # run a command as the server's owner (from /, which every user may enter)
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_test_postgres() {
    if [ -n "${EXPLORER_TEST_POSTGRES_URL:-}" ]; then
        echo "postgres: using EXPLORER_TEST_POSTGRES_URL as given"
        return 0
    fi
    TEST_PG_BIN=$(postgres_bin_dir)
    if [ -z "$TEST_PG_BIN" ]; then
        echo "postgres: no PostgreSQL server installed (apt-get install postgresql, as root):" \
             "the PostgreSQL tests will skip (fail under CI)" >&2
        return 0
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        echo "postgres: running as root but there is no postgres user to run the server as:" \
             "the PostgreSQL tests will skip (fail under CI)" >&2
        return 0
    fi
    local password port started=""
    TEST_PG_DIR=$(mktemp -d /tmp/explorer-pg.XXXXXX) || { TEST_PG_DIR=""; return 1; }  # mode 700
    password=$(python3 -c 'import secrets; print(secrets.token_hex(16))') \
        && echo "$password" > "$TEST_PG_DIR/password" || { stop_test_postgres; return 1; }
    if [ "$(id -u)" = 0 ]; then
        chown -R postgres: "$TEST_PG_DIR" || { stop_test_postgres; return 1; }
    fi
    # Trust on the private socket (the folder is the owner's alone), a password over TCP.
    _as_pg "$TEST_PG_BIN/initdb" -D "$TEST_PG_DIR/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 --pwfile="$TEST_PG_DIR/password" -E UTF8 --no-locale \
        > "$TEST_PG_DIR/initdb.log" 2>&1 \
        || { cat "$TEST_PG_DIR/initdb.log" >&2; stop_test_postgres; return 1; }
    # Durability is worth nothing for a server that is deleted at the end.
    for _ in 1 2 3; do  # a free port can be taken between the probe and the start
        port=$(_free_port)
        if _as_pg "$TEST_PG_BIN/pg_ctl" -D "$TEST_PG_DIR/data" -l "$TEST_PG_DIR/server.log" \
                -o "-c listen_addresses=127.0.0.1 -p $port -k $TEST_PG_DIR -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
                -w -t 60 start >/dev/null; then
            started=yes
            break
        fi
    done
    if [ -z "$started" ]; then
        cat "$TEST_PG_DIR/server.log" >&2
        stop_test_postgres
        return 1
    fi
    _as_pg "$TEST_PG_BIN/psql" -h "$TEST_PG_DIR" -p "$port" -U postgres -d postgres -qX \
        -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE explorer LOGIN CREATEDB PASSWORD '$password'" \
        -c "CREATE DATABASE explorer_test OWNER explorer" >/dev/null \
        || { stop_test_postgres; return 1; }
    export EXPLORER_TEST_POSTGRES_URL="postgresql+psycopg://explorer:$password@127.0.0.1:$port/explorer_test"
    echo "postgres: a throwaway server on 127.0.0.1:$port ($TEST_PG_DIR)"
}

stop_test_postgres() {
    if [ -n "$TEST_PG_DIR" ]; then
        if [ -f "$TEST_PG_DIR/data/postmaster.pid" ]; then
            _as_pg "$TEST_PG_BIN/pg_ctl" -D "$TEST_PG_DIR/data" -m fast -w stop >/dev/null \
                || echo "postgres: could not stop the server in $TEST_PG_DIR" >&2
        fi
        rm -rf "$TEST_PG_DIR"
        TEST_PG_DIR=""
        unset EXPLORER_TEST_POSTGRES_URL
    fi
}
