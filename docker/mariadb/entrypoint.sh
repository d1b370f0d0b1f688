#!/bin/bash
# First start of an empty data directory: create the system tables, then the database and
# user named by MARIADB_DATABASE, MARIADB_USER and MARIADB_PASSWORD (reachable over TCP from
# other containers). A marker file is written last: a start that died half-way is redone.
# Every start ends with the server in the foreground as PID 1.
set -euo pipefail
datadir=/var/lib/mysql
socket=/run/mysqld/mysqld.sock
marker=$datadir/.pushwire-initialised
: "${MARIADB_DATABASE:?}" "${MARIADB_USER:?}" "${MARIADB_PASSWORD:?}"

sql_string() { printf "'%s'" "${1//\'/\'\'}"; }
database=\`${MARIADB_DATABASE//\`/}\`

if [[ ! -f $marker ]]; then
    echo "pushwire-mariadb: initialising $datadir"
    find "$datadir" -mindepth 1 -delete
    # The server's OS user (mysql) administers it over the socket; root logs in nowhere.
    mariadb-install-db --datadir="$datadir" --skip-test-db --auth-root-authentication-method=socket \
        --auth-root-socket-user=mysql >/dev/null
    mariadbd --datadir="$datadir" --skip-networking --socket="$socket" &
    pid=$!
    until mariadb-admin --socket="$socket" ping >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || { echo "pushwire-mariadb: server died" >&2; exit 1; }
        sleep 0.5
    done
    mariadb --socket="$socket" <<SQL
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
CREATE DATABASE IF NOT EXISTS $database;
CREATE USER $(sql_string "$MARIADB_USER")@'%' IDENTIFIED BY $(sql_string "$MARIADB_PASSWORD");
GRANT ALL PRIVILEGES ON $database.* TO $(sql_string "$MARIADB_USER")@'%';
SQL
    mariadb-admin --socket="$socket" shutdown
    wait "$pid"
    touch "$marker"
    echo "pushwire-mariadb: database $MARIADB_DATABASE and user $MARIADB_USER ready"
fi
exec mariadbd --datadir="$datadir" --socket="$socket" --bind-address=0.0.0.0 --port=3306 \
    --skip-name-resolve "$@"
