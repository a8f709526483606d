#!/bin/sh
# Build an app inside its language base image (run by Packer's shell provisioner).
#
# /build/src   the app's source at the commit being built (read-only)
# /build/cache this app's dependency cache, kept between its builds
# /etc/billowin/host-ca.crt  the host's CA bundle, so registries behind a
#                            TLS-inspecting proxy are trusted
#
# BILLOWIN_BUILD_STAGE (billowin/build/deps.py):
#   full  the source, checked, and its dependencies installed (the default)
#   deps  only the dependency files are in /build/src: install the dependencies, nothing else
#   app   the image already has the dependencies (a deps image): copy and check the source only
set -eu
STAGE="${BILLOWIN_BUILD_STAGE:-full}"

# Say plainly when the build hit its memory or process limit (BILLOWIN_BUILD_MEMORY_MB,
# BILLOWIN_BUILD_PIDS_LIMIT): the kernel's own words ("Killed", "Resource temporarily
# unavailable") do not. Shell builtins only: at the process limit nothing can fork.
cgroup_figure() { # <file> <key>: $figure = the number after <key> in a cgroup file, else 0
  figure=0
  if [ -r "$1" ]; then
    while read -r name value; do
      if [ "$name" = "$2" ]; then figure=$value; fi
    done <"$1"
  fi
}
report_limits() {
  status=$?
  if [ "$status" -eq 0 ]; then return 0; fi
  cgroup_figure /sys/fs/cgroup/memory/memory.oom_control oom_kill # cgroup v1
  oom=$figure
  cgroup_figure /sys/fs/cgroup/memory.events oom_kill # cgroup v2
  if [ "$figure" != 0 ]; then oom=$figure; fi
  cgroup_figure /sys/fs/cgroup/pids/pids.events max
  forks=$figure
  cgroup_figure /sys/fs/cgroup/pids.events max
  if [ "$figure" != 0 ]; then forks=$figure; fi
  if [ "$oom" != 0 ]; then
    echo "error: the build ran out of memory: it needed more than its limit of" \
      "${BILLOWIN_BUILD_MEMORY_MB:-?} MB (BILLOWIN_BUILD_MEMORY_MB)" >&2
  elif [ "$forks" != 0 ]; then
    echo "error: the build hit its limit of ${BILLOWIN_BUILD_PIDS_LIMIT:-?} processes" \
      "(BILLOWIN_BUILD_PIDS_LIMIT)" >&2
  fi
  exit "$status"
}
trap report_limits EXIT

export HOME=/root
CA=/etc/billowin/host-ca.crt
export SSL_CERT_FILE="$CA" PIP_CERT="$CA" REQUESTS_CA_BUNDLE="$CA" CURL_CA_BUNDLE="$CA" \
       NODE_EXTRA_CA_CERTS="$CA" npm_config_cafile="$CA" GIT_SSL_CAINFO="$CA"

step() { printf '\n-----> %s\n' "$*"; }

if [ "$STAGE" = deps ]; then step "Copying the dependency files"; else step "Copying the source"; fi
mkdir -p /app
cp -a /build/src/. /app/
rm -rf /app/.git
cd /app

case "$BILLOWIN_LANGUAGE" in
python)
  if [ -n "$BILLOWIN_PIP_INDEX_URL" ]; then export PIP_INDEX_URL="$BILLOWIN_PIP_INDEX_URL"; fi
  export PIP_CACHE_DIR=/build/cache/pip PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
  if [ "$STAGE" = app ]; then
    step "Python: $(python3 --version); dependencies unchanged, already in /app/.venv"
  else
    step "Python: $(python3 --version); creating /app/.venv"
    python3 -m venv /app/.venv
  fi
  if [ "$STAGE" != deps ]; then
    step "Checking the source compiles"
    python3 - <<'PY'
import pathlib
import sys

bad = 0
for path in sorted(pathlib.Path("/app").rglob("*.py")):
    if ".venv" in path.parts:
        continue
    try:
        compile(path.read_bytes(), str(path), "exec")
    except SyntaxError as exc:
        name = path.relative_to("/app")
        print(f"error: {name} line {exc.lineno}: SyntaxError: {exc.msg}", file=sys.stderr)
        bad = 1
sys.exit(bad)
PY
  fi
  if [ "$STAGE" = app ]; then
    :
  elif [ -f requirements.txt ]; then
    step "Installing requirements.txt"
    /app/.venv/bin/pip install -r requirements.txt
  elif [ -f pyproject.toml ]; then
    step "Installing the project (pyproject.toml)"
    /app/.venv/bin/pip install .
  elif [ -f Pipfile ]; then
    step "Installing Pipfile dependencies"
    /app/.venv/bin/pip install pipenv
    /app/.venv/bin/pipenv requirements > /tmp/requirements.txt
    /app/.venv/bin/pip install -r /tmp/requirements.txt
  fi
  ;;
node)
  if [ -n "$BILLOWIN_NPM_REGISTRY" ]; then export npm_config_registry="$BILLOWIN_NPM_REGISTRY"; fi
  export npm_config_cache=/build/cache/npm npm_config_update_notifier=false npm_config_fund=false \
         npm_config_audit=false
  step "Node.js $(node --version), npm $(npm --version)"
  if [ "$STAGE" != deps ]; then
    step "Checking the source parses"
    find /app -name node_modules -prune -o -name '*.js' -type f -print | while read -r file; do
      node --check "$file" || { echo "error: syntax error in ${file#/app/}" >&2; exit 1; }
    done
  fi
  if [ "$STAGE" = app ]; then
    step "Dependencies unchanged: already in /app/node_modules"
  elif [ -f package-lock.json ]; then
    step "Installing dependencies (npm ci)"
    npm ci --omit=dev
  else
    step "Installing dependencies (npm install)"
    npm install --omit=dev
  fi
  ;;
go)
  if [ -n "$BILLOWIN_GOPROXY" ]; then export GOPROXY="$BILLOWIN_GOPROXY"; fi
  # Default flags, so the standard library Debian ships precompiled is reused, not rebuilt.
  export GOMODCACHE=/build/cache/go/mod GOCACHE=/build/cache/go/build GOFLAGS=-mod=mod
  step "$(go version)"
  step "Downloading modules"
  go mod download
  step "Building"
  mkdir -p /app/bin
  if go list -f '{{.Name}}' . 2>/dev/null | grep -qx main; then
    go build -o /app/bin/web .
  fi
  if [ -d cmd ]; then
    go build -o /app/bin/ ./cmd/...
  fi
  ;;
ruby)
  if [ -n "$BILLOWIN_RUBYGEMS_MIRROR" ]; then
    bundle config set --global mirror.https://rubygems.org "$BILLOWIN_RUBYGEMS_MIRROR"
  fi
  step "$(ruby --version), bundler $(bundle --version)"
  step "Checking the source parses"
  find /app -path /app/vendor -prune -o -name '*.rb' -type f -print | while read -r file; do
    ruby -c "$file" >/dev/null || { echo "error: syntax error in ${file#/app/}" >&2; exit 1; }
  done
  if [ -f Gemfile ]; then
    step "Installing gems (bundle install)"
    # Gems the base image already has (Debian's ruby-* packages) need no network.
    if ! bundle install --local; then
      step "Not all gems are local; fetching from the gem server"
      bundle install --jobs 2
    fi
  fi
  ;;
*)
  echo "unknown language: $BILLOWIN_LANGUAGE" >&2
  exit 2
  ;;
esac

step "Build finished"
