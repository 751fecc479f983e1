#!/usr/bin/env bash
# Installs what is missing on a Debian 12 machine (or Raspberry Pi OS Bookworm) and builds .venv.
# Idempotent: a second run installs nothing and takes a second or two.
# Usage: scripts/setup.sh [--with-browser] [--with-postgres]
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(mosquitto mosquitto-clients ffmpeg espeak-ng mpg123 python3-venv)
for arg in "$@"; do
  case "$arg" in
    --with-browser) APT_PACKAGES+=(chromium) ;;
    --with-postgres) APT_PACKAGES+=(postgresql) ;;
    *) echo "setup: unknown option $arg" >&2; exit 2 ;;
  esac
done

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # Never let the package start a system-wide broker: the project runs its own.
  $SUDO env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
  echo "setup: Python 3.11 or newer is needed (found $("$PYTHON" --version))" >&2
  exit 1
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: building .venv from requirements.txt"
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi

# Compiled translations (.mo) are build products, made from the committed .po files.
.venv/bin/pybabel compile -d console/translations >/dev/null 2>&1 || {
  echo "setup: compiling translations failed" >&2; .venv/bin/pybabel compile -d console/translations; exit 1; }
