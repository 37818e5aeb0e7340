#!/usr/bin/env bash
# Deno for the edge functions' tests (edge_functions/): prints the path of a deno binary,
# installing it first when there is none. Order: $DENO, deno on PATH, .tools/ (an earlier run),
# else npm's @deno/<platform> package into .tools/ (npm itself from Debian's nodejs and npm
# packages when missing, as root).
#
#   deno=$(bash scripts/install-deno.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${DENO:-}" ] && [ -x "$DENO" ]; then echo "$DENO"; exit 0; fi
if command -v deno >/dev/null 2>&1; then command -v deno; exit 0; fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) package=@deno/linux-x64-glibc ;;
  Linux-aarch64) package=@deno/linux-arm64-glibc ;;
  Darwin-arm64) package=@deno/darwin-arm64 ;;
  Darwin-x86_64) package=@deno/darwin-x64 ;;
  *) echo "install-deno: no npm package of deno for $(uname -s) $(uname -m); install deno and set DENO" >&2; exit 1 ;;
esac
deno="$PWD/.tools/node_modules/$package/deno"
if [ -x "$deno" ]; then echo "$deno"; exit 0; fi

if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing nodejs and npm (Debian packages) to fetch deno" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >&2
  else
    echo "install-deno: npm is not installed (and this is not root on Debian/Ubuntu); install deno and set DENO" >&2
    exit 1
  fi
fi
echo "==> installing deno ($package, npm) into .tools/" >&2
npm install --prefix .tools --no-audit --no-fund --loglevel=error "$package@^2" >&2
[ -x "$deno" ] || { echo "install-deno: $package installed no executable at $deno" >&2; exit 1; }
echo "$deno"
