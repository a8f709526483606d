#!/bin/sh
# Install one language runtime into a language base image (run by Packer, packer/base.json):
# Debian packages from the image's own suite, and/or the files a runtime provider unpacked
# (/build/runtime, copied into /usr/local). Then check the runtime is the version Billowin chose.
set -eu
if [ "${LANGUAGE:-}" = postgres ]; then
  # An add-on image: each add-on makes its own cluster on its volume (jobspecs/addon.nomad.hcl),
  # so the package's own "main" cluster would only be dead weight in every image.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/billowin.conf
fi
if [ -n "${PACKAGES:-}" ]; then
  if [ -n "${APT_MIRROR:-}" ]; then
    sed -i "s|^deb [^ ]* |deb ${APT_MIRROR} |" /etc/apt/sources.list
  fi
  # Testing suites' Release files are valid for a week only (stable ones have no such date):
  # a mirror that serves a snapshot, or one that syncs seldom, is past it. Their signatures
  # still hold; only a replay of an old, signed Release goes unnoticed.
  apt-get -o Acquire::Check-Valid-Until=false update
  # shellcheck disable=SC2086 # PACKAGES is a space-separated list we control
  apt-get install -y --no-install-recommends $PACKAGES
  apt-get clean
  rm -rf /var/lib/apt/lists/*
fi
if [ -d /build/runtime ] && [ -n "$(ls -A /build/runtime)" ]; then
  cp -a /build/runtime/. /usr/local/
fi

case "${LANGUAGE:-}" in
python) found=$(python3 -c 'import platform; print(platform.python_version())') ;;
node) found=$(node -p 'process.versions.node') ;;
go) found=$(go env GOVERSION | sed 's/^go//') ;;
ruby) found=$(ruby -e 'print RUBY_VERSION') ;;
postgres) found=$(ls /usr/lib/postgresql) ;;
redis) found=$(redis-server --version | sed 's/.* v=\([0-9.]*\).*/\1/') ;;
*) found="" ;;
esac
if [ -n "${EXPECT_VERSION:-}" ]; then
  # Major.minor must match: Debian ships security fixes as new patch releases of the same minor.
  # An add-on's version is a major version only: Postgres 15, Redis 7.
  parts=$(echo "$EXPECT_VERSION" | awk -F. '{print NF < 2 ? NF : 2}')
  want_minor=$(echo "$EXPECT_VERSION" | cut -d. -f1-"$parts")
  found_minor=$(echo "$found" | cut -d. -f1-"$parts")
  if [ "$want_minor" != "$found_minor" ]; then
    echo "error: expected $LANGUAGE $EXPECT_VERSION, the image has ${found:-none}:" \
      "update [runtimes] in billowin/versions.toml" >&2
    exit 1
  fi
  echo "$LANGUAGE $found"
fi
