#!/usr/bin/env bash
# Installs the Debian packages Cricket needs on a fresh machine: the InfluxDB 1.x
# server (influxd) used by the demo and the tests, and Chromium + ChromeDriver used
# to check the HTML report. Safe to run again: it installs only what is missing.
set -euo pipefail
need=()
command -v influxd >/dev/null 2>&1 || need+=(influxdb)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "cricket: missing Debian packages: ${need[*]}." >&2
    echo "  Install them as root: apt-get install -y ${need[*]}" >&2
    echo "  Or run InfluxDB from infra/compose.yaml and point CRICKET_INFLUX_URL at it." >&2
    exit 1
  fi
else SUDO=""; fi
echo "cricket: installing Debian packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian package may start its own service; Cricket runs its own influxd instead.
if command -v service >/dev/null 2>&1; then $SUDO service influxdb stop >/dev/null 2>&1 || true; fi
