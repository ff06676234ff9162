#!/usr/bin/env bash
# Installs the JUnit consumers the ignored JUnit tests use: xmllint (Debian's libxml2-utils) and
# Python's junitparser (PyPI). Nothing to start. Idempotent: installs only what is missing.
# The tests also need PEXEN_JUNIT_XSD, the path of the Jenkins xUnit schema junit-10.xsd
# (.ci/run sets it to ../shared/junit/junit-10.xsd).
set -euo pipefail

if ! command -v xmllint >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libxml2-utils >/dev/null
fi
if ! python3 -c 'import junitparser' 2>/dev/null; then
  python3 -m pip install -q junitparser 2>/dev/null ||
    python3 -m pip install -q --break-system-packages junitparser
fi
echo "junit consumers: $(xmllint --version 2>&1 | head -n 1); junitparser $(python3 -c 'import junitparser; print(junitparser.version)')"
