#!/usr/bin/env bash
# Provisions the test bed's PostgreSQL 15 with pgvector >= 0.8, pg_cron and pgTAP on Debian, as root.
# Idempotent: every step checks first, so a second run takes seconds.
#
# pgvector: bookworm ships 0.4, we need >= 0.8 (HNSW, halfvec), so we build it from Debian trixie's
# *source* package. The deb-src line reuses the mirror already in this machine's apt configuration,
# so no host name is written here.
set -euo pipefail
# Everything this script and its tools print goes to stderr: callers read a URL from their own stdout, and
# pg_ctlcluster prints to stdout (e.g. "Removed stale pid file." after a killed server).
exec 1>&2

PGVER=15
PORT=${PGPORT:-5432}
PASSWORD=${TEST_DB_PASSWORD:-postgres}   # local-only test bed password
log() { echo "[provision-postgres] $*" >&2; }

[ "$(id -u)" = 0 ] || { log "must run as root to provision"; exit 3; }
[ -f /etc/debian_version ] || { log "not a Debian system"; exit 3; }

PKGS=(postgresql-$PGVER postgresql-server-dev-$PGVER postgresql-$PGVER-cron postgresql-$PGVER-pgtap
      libtap-parser-sourcehandler-pgtap-perl build-essential dpkg-dev)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PGCONFIG=/usr/lib/postgresql/$PGVER/bin/pg_config
SHAREDIR=$($PGCONFIG --sharedir)
vector_version() { sed -n "s/^default_version = '\(.*\)'/\1/p" "$SHAREDIR/extension/vector.control" 2>/dev/null; }
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }

if ! { v=$(vector_version) && [ -n "$v" ] && version_ge "$v" 0.8.0; }; then
  log "building pgvector from Debian trixie's source package"
  mirror=$(grep -hoE '^URIs:\s*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$mirror" ] || mirror=$(grep -hoE '^deb\s+\S+' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$mirror" ] || { log "cannot find a Debian mirror in the apt configuration"; exit 3; }
  list=/etc/apt/sources.list.d/pgvector-trixie-src.sources
  printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" > "$list"
  apt-get update -qq -o Dir::Etc::sourcelist="$list" -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0
  work=$(mktemp -d)
  (cd "$work" && apt-get source -qq --download-only pgvector/trixie >/dev/null && dpkg-source -x --no-check ./*.dsc src >/dev/null)
  make -s -C "$work/src" PG_CONFIG=$PGCONFIG OPTFLAGS="" >/dev/null
  make -s -C "$work/src" PG_CONFIG=$PGCONFIG install >/dev/null
  rm -rf "$work"
  log "pgvector $(vector_version) installed"
fi

CONF=/etc/postgresql/$PGVER/main/postgresql.conf
if [ ! -f "$CONF" ]; then pg_createcluster $PGVER main --port "$PORT" >/dev/null; fi
CONFD=/etc/postgresql/$PGVER/main/conf.d
mkdir -p "$CONFD"
want="shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
listen_addresses = '127.0.0.1'
port = $PORT
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off"
if [ "$(cat "$CONFD/testbed.conf" 2>/dev/null)" != "$want" ]; then
  echo "$want" > "$CONFD/testbed.conf"
  pg_ctlcluster $PGVER main stop >/dev/null 2>&1 || true
fi
pg_ctlcluster $PGVER main status >/dev/null 2>&1 || pg_ctlcluster $PGVER main start
for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p "$PORT" && break; sleep 0.2; done
su postgres -c "psql -q -p $PORT -c \"ALTER USER postgres PASSWORD '$PASSWORD'\"" >/dev/null
log "ready on 127.0.0.1:$PORT"
