#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, only when they are missing.
# chromium: browser tests (Playwright drives Debian's chromium; no browser download).
# postgresql: feedback-store and replay-cache tests against a real server on loopback.
# nginx: the shipped reverse-proxy configuration (deploy/nginx/) is tested with a real nginx in front of
#   gunicorn (tests/test_deploy_nginx.py); the test runs it as a child process, never as the system service.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need+=(nginx)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing system packages: ${need[*]}"
$SUDO apt-get update -qq
# The packages' install scripts must not start system services (nginx on port 80): policy-rc.d exit 101,
# unless the machine already has its own policy (then it is left alone).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
