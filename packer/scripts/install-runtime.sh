#!/bin/sh
# Install one language runtime from Debian's packages into the base image.
set -eu
if [ -n "${APT_MIRROR:-}" ]; then
  sed -i "s|^deb [^ ]* |deb ${APT_MIRROR} |" /etc/apt/sources.list
fi
apt-get update
# shellcheck disable=SC2086 # PACKAGES is a space-separated list we control
apt-get install -y --no-install-recommends $PACKAGES
apt-get clean
rm -rf /var/lib/apt/lists/*
