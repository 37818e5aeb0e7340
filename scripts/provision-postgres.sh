#!/usr/bin/env bash
# provision-postgres.sh — install and start the PostgreSQL 15 server pgmlops runs on.
#
# Run as root on Debian/Ubuntu (written for Debian 12 "bookworm"). It:
#   1. installs PostgreSQL 15, server headers, pg_cron, pgTAP, pg_prove and build tools via apt;
#   2. builds pgvector and TimescaleDB (Apache-2 edition) against PG 15 from Debian trixie's
#      source packages (bookworm's binary packages lack them or are too old);
#   3. creates a dedicated cluster (plain initdb/pg_ctl, independent of pg_createcluster),
#      starts it, and creates the database "pgmlops".
#
# Idempotent: a rerun skips every step that is already done and takes a second or two.
# Progress goes to stderr; the only line written to stdout is the connection URL, so:
#     URL=$(sudo bash scripts/provision-postgres.sh)
#
# Environment (all optional):
#   PGMLOPS_PGDATA     data directory            (default /var/lib/pgmlops/pg15)
#   PGMLOPS_PGPORT     TCP port on 127.0.0.1     (default 54329)
#   PGMLOPS_PGSOCKET   unix socket directory     (default /var/run/pgmlops)
#   PGMLOPS_DB         database to create        (default pgmlops)
#   PGMLOPS_PG_FAST=1  fsync/synchronous_commit/full_page_writes off (CI only: unsafe on crash)
#   PGMLOPS_BUILD_DIR  where sources are fetched and built (default /var/cache/pgmlops-build)
#   PGMLOPS_PGVECTOR_VERSION / PGMLOPS_TIMESCALEDB_VERSION  upstream versions (0.8.0 / 2.19.3)
#   PGMLOPS_SRC_SUITE  Debian suite the extension sources come from (default trixie)
set -euo pipefail

# Everything but the final URL goes to stderr; fd 3 is the real stdout.
exec 3>&1 1>&2

PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/${PG_MAJOR}/bin
PG_CONFIG=${PG_BIN}/pg_config
PG_SHARE=/usr/share/postgresql/${PG_MAJOR}/extension
PG_LIB=/usr/lib/postgresql/${PG_MAJOR}/lib

PGDATA=${PGMLOPS_PGDATA:-/var/lib/pgmlops/pg15}
PGPORT=${PGMLOPS_PGPORT:-54329}
PGSOCKET=${PGMLOPS_PGSOCKET:-/var/run/pgmlops}
PGDB=${PGMLOPS_DB:-pgmlops}
PG_FAST=${PGMLOPS_PG_FAST:-0}
BUILD_DIR=${PGMLOPS_BUILD_DIR:-/var/cache/pgmlops-build}
PGVECTOR_VERSION=${PGMLOPS_PGVECTOR_VERSION:-0.8.0}
TIMESCALEDB_VERSION=${PGMLOPS_TIMESCALEDB_VERSION:-2.19.3}
SRC_SUITE=${PGMLOPS_SRC_SUITE:-trixie}
SRC_LIST=/etc/apt/sources.list.d/pgmlops-${SRC_SUITE}-src.sources

PACKAGES=(
  postgresql-15 postgresql-client-15 postgresql-server-dev-15
  postgresql-15-cron postgresql-15-pgtap
  libtap-parser-sourcehandler-pgtap-perl # provides /usr/bin/pg_prove
  build-essential dpkg-dev cmake libssl-dev libkrb5-dev
  ca-certificates util-linux
)

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C.UTF-8

log() { printf '[provision-postgres] %s\n' "$*" >&2; }
die() { printf '[provision-postgres] ERROR: %s\n' "$*" >&2; exit 1; }
on_err() { printf '[provision-postgres] ERROR: command failed (exit %s) at line %s: %s\n' "$1" "$2" "$3" >&2; }
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR

[[ ${EUID} -eq 0 ]] || die "must run as root (try: sudo bash $0)"
{ command -v apt-get && command -v dpkg-query; } >/dev/null \
  || die "apt-get/dpkg-query not found: this script supports Debian/Ubuntu only"
[[ ${PGPORT} =~ ^[0-9]+$ ]] || die "PGMLOPS_PGPORT must be a number, got '${PGPORT}'"
[[ ${PGDB} =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "PGMLOPS_DB must be a plain identifier, got '${PGDB}'"
[[ ${PGDATA} == /* && ${PGSOCKET} == /* ]] || die "PGMLOPS_PGDATA and PGMLOPS_PGSOCKET must be absolute paths"
cd /   # commands run as postgres must not inherit an unreadable cwd

# Serialise concurrent runs (e.g. two CI jobs on one machine).
mkdir -p /run/lock
exec 9>/run/lock/pgmlops-provision.lock
flock -w 1800 9 || die "another provision-postgres.sh run holds /run/lock/pgmlops-provision.lock"

# Temporarily forbid service starts during apt installs (standard Debian policy-rc.d
# mechanism) so the postgresql package does not start clusters of its own.
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_OURS=0
cleanup() { if [[ ${POLICY_RC_OURS} == 1 ]]; then rm -f "${POLICY_RC}"; fi; }
trap cleanup EXIT

APT_UPDATED=0
apt_update() {
  log "apt-get update"
  apt-get update -q || die "apt-get update failed"
  APT_UPDATED=1
}

# ---------------------------------------------------------------- 1. apt packages
pkg_installed() {
  [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]
}

missing=()
for p in "${PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done

if ((${#missing[@]})); then
  log "installing packages: ${missing[*]}"
  # Keep the Debian package from creating (and starting) a default 'main' cluster on 5432.
  # An existing 'main' cluster is left alone.
  mkdir -p /etc/postgresql-common/createcluster.d
  if [[ ! -e /etc/postgresql-common/createcluster.d/pgmlops.conf ]]; then
    printf "# written by pgmlops scripts/provision-postgres.sh\ncreate_main_cluster = false\n" \
      >/etc/postgresql-common/createcluster.d/pgmlops.conf
  fi
  if [[ ! -e ${POLICY_RC} ]]; then
    printf '#!/bin/sh\n# temporary, from pgmlops provision-postgres.sh\nexit 101\n' >"${POLICY_RC}"
    chmod 755 "${POLICY_RC}"
    POLICY_RC_OURS=1
  fi
  apt_update
  apt-get install -y -q --no-install-recommends "${missing[@]}" 3>&- 9>&- \
    || die "apt-get install failed for: ${missing[*]}"
  cleanup; POLICY_RC_OURS=0
else
  log "apt packages already installed"
fi

[[ -x ${PG_CONFIG} ]] || die "${PG_CONFIG} missing after install (is postgresql-server-dev-15 installed?)"
command -v pg_prove >/dev/null || die "pg_prove not on PATH (package libtap-parser-sourcehandler-pgtap-perl)"

# ---------------------------------------------------------------- 2. extension builds
PGVECTOR_DONE=0; TIMESCALEDB_DONE=0
[[ -f ${PG_SHARE}/vector--${PGVECTOR_VERSION}.sql && -f ${PG_LIB}/vector.so ]] && PGVECTOR_DONE=1
[[ -f ${PG_SHARE}/timescaledb--${TIMESCALEDB_VERSION}.sql \
  && -f ${PG_LIB}/timescaledb-${TIMESCALEDB_VERSION}.so ]] && TIMESCALEDB_DONE=1

# Print the Debian version of source package $1 whose upstream version is $2 (highest wins).
src_version() {
  local pkg=$1 upstream=$2 v best=""
  while read -r v; do
    # Debian version = [epoch:]upstream[+dfsg...]-revision
    local up=${v#*:}; up=${up%-*}; up=${up%%+*}; up=${up%%~*}
    if [[ ${up} == "${upstream}" ]]; then
      if [[ -z ${best} ]] || dpkg --compare-versions "${v}" gt "${best}"; then best=${v}; fi
    fi
  done < <(apt-cache showsrc --only-source "${pkg}" 2>/dev/null | sed -n 's/^Version: //p')
  printf '%s' "${best}"
}

# Fetch and unpack source package $1 (upstream version $2) into FETCHED_SRC.
FETCHED_SRC=
fetch_source() {
  local pkg=$1 upstream=$2 ver dir
  ver=$(src_version "${pkg}" "${upstream}")
  if [[ -z ${ver} && ${APT_UPDATED} == 0 ]]; then
    apt_update
    ver=$(src_version "${pkg}" "${upstream}")
  fi
  if [[ -z ${ver} ]]; then
    die "no source package ${pkg} with upstream version ${upstream} in the apt sources; available: $(
      apt-cache showsrc --only-source "${pkg}" 2>/dev/null | sed -n 's/^Version: //p' | tr '\n' ' ')"
  fi
  dir=${BUILD_DIR}/${pkg}_${ver}
  rm -rf "${dir}"
  mkdir -p "${dir}"
  # let apt's sandbox user write the downloads (avoids the "unsandboxed as root" warning)
  if id -u _apt >/dev/null 2>&1; then chown _apt:root "${dir}"; fi
  log "fetching source ${pkg}=${ver} (${SRC_SUITE}) into ${dir}"
  (cd "${dir}" && apt-get source -q "${pkg}=${ver}") || die "apt-get source ${pkg}=${ver} failed"
  FETCHED_SRC=$(find "${dir}" -mindepth 1 -maxdepth 1 -type d | head -n1)
  [[ -n ${FETCHED_SRC} ]] || die "apt-get source ${pkg}=${ver} produced no source tree in ${dir}"
}

if [[ ${PGVECTOR_DONE} == 0 || ${TIMESCALEDB_DONE} == 0 ]]; then
  # deb-src only: no binaries from ${SRC_SUITE} can be installed through this file.
  src_content="# written by pgmlops scripts/provision-postgres.sh: source packages only
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: ${SRC_SUITE}
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"
  if [[ ! -f ${SRC_LIST} || $(cat "${SRC_LIST}") != "${src_content%$'\n'}" ]]; then
    [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] \
      || apt-get install -y -q debian-archive-keyring \
      || die "cannot install debian-archive-keyring (needed to verify ${SRC_SUITE} sources)"
    log "adding ${SRC_LIST}"
    printf '%s' "${src_content}" >"${SRC_LIST}"
    apt_update
  fi
  mkdir -p "${BUILD_DIR}"
  JOBS=$(nproc 2>/dev/null || echo 2)

  if [[ ${PGVECTOR_DONE} == 0 ]]; then
    fetch_source pgvector "${PGVECTOR_VERSION}"; src=${FETCHED_SRC}
    log "building pgvector ${PGVECTOR_VERSION} in ${src}"
    # OPTFLAGS="": portable build (no -march=native), as Debian does
    make -C "${src}" -j"${JOBS}" PG_CONFIG="${PG_CONFIG}" OPTFLAGS="" || die "pgvector build failed"
    make -C "${src}" install PG_CONFIG="${PG_CONFIG}" OPTFLAGS="" || die "pgvector install failed"
    [[ -f ${PG_SHARE}/vector--${PGVECTOR_VERSION}.sql ]] \
      || die "pgvector installed but ${PG_SHARE}/vector--${PGVECTOR_VERSION}.sql is missing"
  else
    log "pgvector ${PGVECTOR_VERSION} already installed"
  fi

  if [[ ${TIMESCALEDB_DONE} == 0 ]]; then
    fetch_source timescaledb "${TIMESCALEDB_VERSION}"; src=${FETCHED_SRC}
    log "building timescaledb ${TIMESCALEDB_VERSION} (Apache-2 edition) in ${src}"
    # Same switches as Debian's packaging (telemetry compiled out), tests off.
    (cd "${src}" && BUILD_FORCE_REMOVE=true ./bootstrap \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DPG_CONFIG="${PG_CONFIG}" \
      -DAPACHE_ONLY=ON \
      -DSEND_TELEMETRY_DEFAULT=OFF \
      -DUSE_TELEMETRY=OFF \
      -DREGRESS_CHECKS=OFF \
      -DTAP_CHECKS=OFF \
      -DWARNINGS_AS_ERRORS=OFF) || die "timescaledb cmake configure failed"
    make -C "${src}/build" -j"${JOBS}" || die "timescaledb build failed"
    make -C "${src}/build" install || die "timescaledb install failed"
    [[ -f ${PG_SHARE}/timescaledb--${TIMESCALEDB_VERSION}.sql ]] \
      || die "timescaledb installed but ${PG_SHARE}/timescaledb--${TIMESCALEDB_VERSION}.sql is missing"
  else
    log "timescaledb ${TIMESCALEDB_VERSION} already installed"
  fi
else
  log "pgvector ${PGVECTOR_VERSION} and timescaledb ${TIMESCALEDB_VERSION} already installed"
fi

# ---------------------------------------------------------------- 3. cluster
# fds 3 (real stdout) and 9 (lock) must not leak into the server, or `URL=$(...)` and the
# lock would stay open as long as the server runs.
as_pg() { runuser -u postgres -- "$@" 3>&- 9>&-; }
id -u postgres >/dev/null 2>&1 || die "OS user 'postgres' does not exist (postgresql-common creates it)"

mkdir -p "${PGSOCKET}"
chown postgres:postgres "${PGSOCKET}"
chmod 755 "${PGSOCKET}"

if [[ -f ${PGDATA}/PG_VERSION ]]; then
  pgv=$(<"${PGDATA}/PG_VERSION")
  [[ ${pgv} == "${PG_MAJOR}" ]] || die "${PGDATA} holds a PostgreSQL ${pgv} cluster, expected ${PG_MAJOR}"
  log "cluster already initialised in ${PGDATA}"
else
  if [[ -d ${PGDATA} && -n $(ls -A "${PGDATA}") ]]; then
    die "${PGDATA} exists, is not empty and is not a PostgreSQL data directory; move it away or set PGMLOPS_PGDATA"
  fi
  log "initdb ${PGDATA}"
  mkdir -p "${PGDATA}"
  chown postgres:postgres "${PGDATA}"
  chmod 700 "${PGDATA}"
  as_pg "${PG_BIN}/initdb" -D "${PGDATA}" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
    || die "initdb failed for ${PGDATA}"
fi

# Our settings live in pgmlops.conf, included at the end of postgresql.conf.
if ! grep -q "^include_if_exists = 'pgmlops.conf'" "${PGDATA}/postgresql.conf"; then
  printf "\n# pgmlops settings (managed by scripts/provision-postgres.sh)\ninclude_if_exists = 'pgmlops.conf'\n" \
    >>"${PGDATA}/postgresql.conf"
fi
conf="# Managed by pgmlops scripts/provision-postgres.sh; rewritten when its settings change.
listen_addresses = '127.0.0.1'
port = ${PGPORT}
unix_socket_directories = '${PGSOCKET}'
max_connections = 200
max_worker_processes = 16
shared_preload_libraries = 'timescaledb,pg_cron'
cron.database_name = '${PGDB}'
# timescaledb is built with -DUSE_TELEMETRY=OFF, so there is no timescaledb.telemetry_level to set.
"
if [[ ${PG_FAST} == 1 ]]; then
  conf+="# PGMLOPS_PG_FAST=1: for throwaway CI clusters only, data may be lost on a crash
fsync = off
synchronous_commit = off
full_page_writes = off
"
fi
conf_changed=0
if [[ ! -f ${PGDATA}/pgmlops.conf || $(cat "${PGDATA}/pgmlops.conf") != "${conf%$'\n'}" ]]; then
  log "writing ${PGDATA}/pgmlops.conf"
  printf '%s' "${conf}" >"${PGDATA}/pgmlops.conf"
  chown postgres:postgres "${PGDATA}/pgmlops.conf"
  conf_changed=1
fi

LOGFILE=${PGDATA}/postgresql.log
start_failed() {
  printf '%s\n' "--- last lines of ${LOGFILE} ---"
  tail -n 30 "${LOGFILE}" 2>/dev/null || true
  die "$1"
}
if as_pg "${PG_BIN}/pg_ctl" -D "${PGDATA}" status >/dev/null 2>&1; then
  if [[ ${conf_changed} == 1 ]]; then
    log "settings changed: restarting the server"
    as_pg "${PG_BIN}/pg_ctl" -D "${PGDATA}" -l "${LOGFILE}" -w -t 120 restart -m fast \
      || start_failed "pg_ctl restart failed"
  else
    log "server already running"
  fi
else
  log "starting the server on 127.0.0.1:${PGPORT} (log: ${LOGFILE})"
  as_pg "${PG_BIN}/pg_ctl" -D "${PGDATA}" -l "${LOGFILE}" -w -t 120 start \
    || start_failed "pg_ctl start failed (is port ${PGPORT} already in use?)"
fi

for _ in $(seq 1 60); do
  if "${PG_BIN}/pg_isready" -q -U postgres -d postgres -h "${PGSOCKET}" -p "${PGPORT}"; then break; fi
  sleep 1
done
"${PG_BIN}/pg_isready" -q -U postgres -d postgres -h "${PGSOCKET}" -p "${PGPORT}" \
  || start_failed "server does not accept connections on ${PGSOCKET} port ${PGPORT}"
"${PG_BIN}/pg_isready" -q -U postgres -d postgres -h 127.0.0.1 -p "${PGPORT}" \
  || start_failed "server runs but does not accept TCP connections on 127.0.0.1:${PGPORT} (another server on that port?)"

# ---------------------------------------------------------------- 4. database and password
psql_pg() { as_pg "${PG_BIN}/psql" -X -q -v ON_ERROR_STOP=1 -h "${PGSOCKET}" -p "${PGPORT}" -U postgres "$@"; }

if [[ -z $(psql_pg -d postgres -Atc "select 1 from pg_database where datname = '${PGDB}'") ]]; then
  log "creating database ${PGDB}"
  psql_pg -d postgres -c "create database ${PGDB}" || die "could not create database ${PGDB}"
fi
if [[ $(psql_pg -d postgres -Atc "select rolpassword is null from pg_authid where rolname = 'postgres'") == t ]]; then
  log "setting password for role postgres"
  psql_pg -d postgres -c "alter role postgres password 'postgres'"
fi

log "ready"
printf 'postgresql://postgres:postgres@127.0.0.1:%s/%s\n' "${PGPORT}" "${PGDB}" >&3
