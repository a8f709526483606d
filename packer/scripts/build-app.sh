#!/bin/sh
# Build an app inside its language base image (run by Packer's shell provisioner), the way
# Heroku's buildpacks do: the package manager its files name, then its build step.
#
# /build/src   the app's source at the commit being built (read-only)
# /build/cache this app's dependency cache, kept between its builds
# /etc/billowin/host-ca.crt  the host's CA bundle, so registries behind a
#                            TLS-inspecting proxy are trusted
#
# BILLOWIN_BUILD_STAGE (billowin/build/deps.py, which lists the files each install reads):
#   full  the source, checked, and its dependencies installed (the default)
#   deps  only the dependency files are in /build/src: install the dependencies, nothing else
#   app   the image already has the dependencies (a deps image): copy and check the source,
#         then the steps that need it (Node's build script and prune, collectstatic, rake
#         assets:precompile)
#
# python  uv.lock (uv sync), poetry.lock (poetry install), Pipfile.lock (pipenv), requirements.txt
#         or pyproject.toml (pip), the first found, into /app/.venv; then Django's collectstatic
# node    npm, yarn (classic or berry) or pnpm by lockfile, yarn and pnpm through corepack at
#         package.json's packageManager version; the build script with devDependencies, then
#         devDependencies pruned
# go      modules or vendor/; every main package into /app/bin/<directory name>
# ruby    Bundler (frozen to Gemfile.lock, without development and test); rake assets:precompile
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
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }
warn() { printf 'warning: %s\n' "$*" >&2; }

# A command-line tool from PyPI (uv, poetry, pipenv) in a venv of its own in the app's cache,
# one per Python version, so it is installed once and never mixed into /app/.venv.
# Sets $tool to its executable.
python_tool() { # <name> <pip requirement>
  tool_dir="/build/cache/tools/python$(python3 -c 'import platform; print(platform.python_version())')/$1"
  tool="$tool_dir/bin/$1"
  if [ -x "$tool" ] && "$tool" --version >/dev/null 2>&1; then return 0; fi
  step "Installing $2 (from the package index, kept in the build cache)"
  rm -rf "$tool_dir"
  python3 -m venv "$tool_dir"
  "$tool_dir/bin/pip" install --quiet "$2" ||
    fail "could not install $2 from the package index (${PIP_INDEX_URL:-https://pypi.org/simple}):" \
      "set BILLOWIN_PIP_INDEX_URL to a mirror this machine can reach"
}

if [ "$STAGE" = deps ]; then step "Copying the dependency files"; else step "Copying the source"; fi
mkdir -p /app
cp -a /build/src/. /app/
rm -rf /app/.git
cd /app

case "$BILLOWIN_LANGUAGE" in
python)
  if [ -n "$BILLOWIN_PIP_INDEX_URL" ]; then
    export PIP_INDEX_URL="$BILLOWIN_PIP_INDEX_URL" UV_INDEX_URL="$BILLOWIN_PIP_INDEX_URL"
  fi
  export PIP_CACHE_DIR=/build/cache/pip PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
  # The package manager: the first of these files found (deps.py's PYTHON_MANAGERS, same order).
  manager=none
  for file in uv.lock poetry.lock Pipfile.lock requirements.txt pyproject.toml Pipfile; do
    if [ -f "$file" ]; then
      if [ "$manager" = none ]; then
        manager=$file
      elif [ "$file" != pyproject.toml ] && [ "$file" != Pipfile ]; then
        warn "found $manager and $file: installing from $manager only (delete the one you do not use)"
      fi
    fi
  done
  if [ "$STAGE" = app ]; then
    step "Python: $(python3 --version); dependencies unchanged, already in /app/.venv"
  elif [ "$manager" = uv.lock ]; then
    step "Python: $(python3 --version); uv creates /app/.venv"
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
  elif [ "$manager" = uv.lock ]; then
    python_tool uv uv
    python=$(command -v python3)
    export UV_CACHE_DIR=/build/cache/uv UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_NO_PROGRESS=1 \
           UV_PYTHON_DOWNLOADS=never UV_PYTHON="$python" UV_PROJECT_ENVIRONMENT=/app/.venv
    step "Installing dependencies from uv.lock (uv sync --frozen --no-dev)"
    # Only the dependency files in the deps stage: the project itself (if it is a package) waits.
    only=""
    if [ "$STAGE" = deps ]; then only=--no-install-project; fi
    # shellcheck disable=SC2086 # $only is one option or nothing
    "$tool" sync --frozen --no-dev $only ||
      fail "uv sync could not install uv.lock (above): if pyproject.toml changed, run \`uv lock\`" \
        "and commit uv.lock"
  elif [ "$manager" = poetry.lock ]; then
    python_tool poetry 'poetry>=2,<3'
    step "Installing dependencies from poetry.lock (poetry install --only main --no-root)"
    # Poetry installs into the venv it finds active: /app/.venv.
    VIRTUAL_ENV=/app/.venv POETRY_VIRTUALENVS_IN_PROJECT=true POETRY_CACHE_DIR=/build/cache/poetry \
      POETRY_NO_INTERACTION=1 "$tool" install --only main --no-root ||
      fail "poetry could not install poetry.lock (above): if pyproject.toml changed, run" \
        "\`poetry lock\` and commit poetry.lock"
  elif [ "$manager" = Pipfile.lock ] || [ "$manager" = Pipfile ]; then
    if [ ! -f Pipfile.lock ]; then
      fail "a Pipfile without its Pipfile.lock: run \`pipenv lock\` and commit Pipfile.lock"
    fi
    python_tool pipenv pipenv
    step "Installing dependencies from Pipfile.lock (pipenv requirements, then pip)"
    PIPENV_VERBOSITY=-1 PIPENV_PIPFILE=/app/Pipfile "$tool" requirements >/tmp/requirements.txt ||
      fail "pipenv could not read Pipfile.lock (above): run \`pipenv lock\` and commit Pipfile.lock"
    /app/.venv/bin/pip install -r /tmp/requirements.txt
  elif [ "$manager" = requirements.txt ]; then
    step "Installing requirements.txt"
    /app/.venv/bin/pip install -r requirements.txt
  elif [ "$manager" = pyproject.toml ]; then
    step "Installing the project (pyproject.toml)"
    /app/.venv/bin/pip install .
  fi
  # Django's static files, as Heroku collects them: when manage.py is there and Django installed.
  if [ "$STAGE" != deps ] && [ -f manage.py ] && [ -x /app/.venv/bin/python ] &&
    /app/.venv/bin/python -c 'import django' 2>/dev/null; then
    step "Django: python manage.py collectstatic --noinput"
    { /app/.venv/bin/python manage.py collectstatic --noinput && status=0 || status=$?
      echo "$status" >/tmp/collectstatic.status; } 2>&1 | tee /tmp/collectstatic.log
    if [ "$(cat /tmp/collectstatic.status)" != 0 ]; then
      fail "\`python manage.py collectstatic --noinput\` failed: $(grep . /tmp/collectstatic.log |
        tail -n 1) (the whole output is above): settings that read config vars need defaults" \
        "that work at build time"
    fi
  fi
  ;;
node)
  if [ -n "$BILLOWIN_NPM_REGISTRY" ]; then
    export npm_config_registry="$BILLOWIN_NPM_REGISTRY" YARN_REGISTRY="$BILLOWIN_NPM_REGISTRY" \
           YARN_NPM_REGISTRY_SERVER="$BILLOWIN_NPM_REGISTRY"
  fi
  # Corepack fetches pnpm and Yarn (berry too) from the npm registry, never asking.
  export COREPACK_NPM_REGISTRY="${BILLOWIN_NPM_REGISTRY:-https://registry.npmjs.org}" \
         COREPACK_ENABLE_DOWNLOAD_PROMPT=0 COREPACK_ENABLE_AUTO_PIN=0 YARN_HTTPS_CA_FILE_PATH="$CA" \
         YARN_ENABLE_TELEMETRY=0 YARN_ENABLE_PROGRESS_BARS=0 YARN_ENABLE_GLOBAL_CACHE=false
  export npm_config_cache=/build/cache/npm npm_config_update_notifier=false npm_config_fund=false \
         npm_config_audit=false
  step "Node.js $(node --version), npm $(npm --version)"
  if [ ! -f package.json ]; then fail "no package.json: npm, yarn and pnpm install from it"; fi
  # The package manager: the lockfile's, else packageManager's (package.json), else npm.
  wanted=$(node -p 'const p = require("./package.json").packageManager; typeof p === "string" ? p : ""')
  manager="" lock=""
  for lockfile in package-lock.json npm-shrinkwrap.json yarn.lock pnpm-lock.yaml; do
    if [ -f "$lockfile" ]; then
      case $lockfile in yarn.lock) found=yarn ;; pnpm-lock.yaml) found=pnpm ;; *) found=npm ;; esac
      if [ -n "$manager" ] && [ "$found" != "$manager" ]; then
        fail "found both $lock and $lockfile: Billowin cannot tell whether $manager or $found" \
          "installs this app; delete the lockfile of the one you do not use"
      fi
      manager=$found lock=$lockfile
    fi
  done
  if [ -n "$manager" ] && [ -n "$wanted" ] && [ "${wanted%%@*}" != "$manager" ]; then
    fail "package.json's packageManager is $wanted, but the lockfile is $lock ($manager's):" \
      "make them agree"
  fi
  if [ -z "$manager" ]; then
    manager=${wanted%%@*}
    case $manager in npm | yarn | pnpm) ;; "") manager=npm ;; *)
      fail "package.json's packageManager is $wanted: Billowin installs with npm, yarn or pnpm" ;;
    esac
  fi
  flavour=$manager
  if [ "$manager" = yarn ]; then
    # Berry (Yarn 2+) by packageManager's version, else by its lockfile or its .yarnrc.yml.
    flavour=yarn-classic
    export YARN_CACHE_FOLDER=/build/cache/yarn
    case $wanted in
    yarn@1.*) ;;
    yarn@*) flavour=yarn-berry ;;
    *) if [ -f .yarnrc.yml ] || grep -qs '^__metadata:' yarn.lock; then flavour=yarn-berry; fi ;;
    esac
    # Berry's cache stays in the image (/app/.yarn/cache): Plug'n'Play runs from its zip files.
    if [ "$flavour" = yarn-berry ]; then unset YARN_CACHE_FOLDER; fi
    if [ "$flavour" = yarn-berry ] && [ -z "$wanted" ] && ! grep -qs '^yarnPath:' .yarnrc.yml; then
      fail "this is a Yarn 2+ (berry) project without a version: add \"packageManager\":" \
        "\"yarn@<version>\" to package.json (\`corepack use yarn@4\` does)"
    fi
  elif [ "$manager" = pnpm ]; then
    # The store is copied from (node_modules is another filesystem): nothing at run time needs it.
    export npm_config_store_dir=/build/cache/pnpm-store
  fi
  if [ "$manager" != npm ]; then
    if ! command -v corepack >/dev/null 2>&1; then
      # Debian's nodejs has no corepack, nor has Node.js 25 and later: the npm package does.
      if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
        corepack=corepack@0.33
      else
        corepack=corepack@0.34
      fi
      step "Installing $corepack (this Node.js has no corepack, which runs $manager)"
      npm install --global "$corepack" ||
        fail "could not install $corepack from the npm registry (${npm_config_registry:-npmjs.org}):" \
          "set BILLOWIN_NPM_REGISTRY to a mirror this machine can reach"
    fi
    corepack enable yarn pnpm
    fetch_failed="corepack could not fetch ${wanted:-$manager} (above): check packageManager in"
    fetch_failed="$fetch_failed package.json, or set BILLOWIN_NPM_REGISTRY to a registry this machine can reach"
    if ! version=$("$manager" --version 2>/tmp/corepack.log); then
      if ! grep -q 'No compatible signature found' /tmp/corepack.log; then
        cat /tmp/corepack.log >&2
        fail "$fetch_failed"
      fi
      # A mirror or proxy that drops the registry's signatures: the tarball's sha512 integrity
      # (and packageManager's own hash, if it has one) is still checked.
      warn "the npm registry sent no signature corepack knows for ${wanted:-$manager}" \
        "(a mirror or proxy that drops them?): fetching it with its checksum checked, not its signature"
      export COREPACK_INTEGRITY_KEYS=0
      version=$("$manager" --version) || fail "$fetch_failed"
    fi
    step "$manager $version (corepack${wanted:+, packageManager $wanted})"
  fi
  # The build script Heroku runs: heroku-postbuild instead of build when there is one.
  build=$(node -p 'const s = require("./package.json").scripts || {};
    "heroku-postbuild" in s ? "heroku-postbuild" : "build" in s ? "build" : ""')
  has_script() { node -e 'process.exit(process.argv[1] in (require("./package.json").scripts || {}) ? 0 : 1)' "$1"; }
  run_script() { # <script>: run a package.json script with the app's package manager
    case $manager in
    npm) npm run "$1" ;;
    pnpm) pnpm run "$1" ;;
    *) yarn run "$1" ;;
    esac || fail "the $1 script failed (its output is above): \`$manager run $1\`"
  }
  if [ "$STAGE" != deps ]; then
    step "Checking the source parses"
    find /app -name node_modules -prune -o -name .yarn -prune -o -name '*.js' -type f -print |
      while read -r file; do
        node --check "$file" || { echo "error: syntax error in ${file#/app/}" >&2; exit 1; }
      done
  fi
  if [ "$STAGE" != deps ] && has_script heroku-prebuild; then
    step "Running heroku-prebuild"
    run_script heroku-prebuild
  fi
  # With a build script the install includes devDependencies (the build needs them) and the
  # app stage prunes them after the build; without one only the dependencies are installed.
  frozen=--frozen-lockfile # yarn classic's and pnpm's: install exactly the lockfile
  if [ -z "$lock" ] && [ "$flavour" = pnpm ]; then frozen=--no-frozen-lockfile; fi
  if [ -z "$lock" ] && [ "$flavour" = yarn-classic ]; then frozen=--no-lockfile; fi
  if [ "$STAGE" = app ]; then
    step "Dependencies unchanged: already in /app/node_modules"
  else
    scope="without devDependencies"
    if [ -n "$build" ]; then scope="with devDependencies, for the $build script"; fi
    install_failed="$manager could not install the dependencies (above)"
    case $flavour in
    npm)
      omit=--omit=dev
      if [ -n "$build" ]; then omit=--include=dev; fi
      if [ -n "$lock" ]; then
        step "Installing dependencies $scope (npm ci)"
        npm ci "$omit" || fail "$install_failed: if package.json changed, run \`npm install\`" \
          "and commit $lock"
      else
        step "Installing dependencies $scope (npm install)"
        npm install "$omit" || fail "$install_failed"
      fi
      ;;
    pnpm)
      prod=--prod
      if [ -n "$build" ]; then prod=--prod=false; fi
      step "Installing dependencies $scope (pnpm install $frozen)"
      pnpm install "$frozen" "$prod" ||
        fail "$install_failed: if package.json changed, run \`pnpm install\` and commit pnpm-lock.yaml"
      ;;
    yarn-classic)
      production=true
      if [ -n "$build" ]; then production=false; fi
      step "Installing dependencies $scope (yarn install $frozen)"
      yarn install "$frozen" --production="$production" --non-interactive ||
        fail "$install_failed: if package.json changed, run \`yarn install\` and commit yarn.lock"
      ;;
    yarn-berry)
      # Berry installs devDependencies too; `workspaces focus --production` prunes them below.
      step "Installing dependencies (yarn install --immutable)"
      yarn install --immutable ||
        fail "$install_failed: if package.json changed, run \`yarn install\` and commit yarn.lock"
      ;;
    esac
  fi
  if [ "$STAGE" != deps ] && [ -n "$build" ]; then
    step "Running the $build script"
    export NODE_ENV=production
    run_script "$build"
  fi
  if [ "$STAGE" != deps ] && { [ -n "$build" ] || [ "$flavour" = yarn-berry ]; }; then
    step "Pruning devDependencies"
    case $flavour in
    npm) npm prune --omit=dev ;;
    pnpm) pnpm prune --prod ;;
    yarn-classic) yarn install "$frozen" --production=true --non-interactive ;;
    yarn-berry)
      if yarn workspaces focus --help >/dev/null 2>&1; then
        yarn workspaces focus --all --production
      else
        warn "devDependencies kept: this Yarn has no \`workspaces focus\` (the workspace-tools" \
          "plugin, built into Yarn 4)"
      fi
      ;;
    esac || fail "could not prune the devDependencies (above)"
  fi
  if [ "$STAGE" != deps ] && has_script heroku-cleanup; then
    step "Running heroku-cleanup"
    run_script heroku-cleanup
  fi
  ;;
go)
  if [ -n "$BILLOWIN_GOPROXY" ]; then export GOPROXY="$BILLOWIN_GOPROXY"; fi
  # Default flags otherwise, so the standard library Debian ships precompiled is reused.
  export GOMODCACHE=/build/cache/go/mod GOCACHE=/build/cache/go/build
  step "$(go version)"
  if [ -d vendor ]; then
    export GOFLAGS=-mod=vendor
    step "Using the vendor directory (no module downloads)"
  else
    export GOFLAGS=-mod=mod
    step "Downloading modules"
    go mod download
  fi
  step "Building every main package into /app/bin"
  module=$(go list -m) || fail "go.mod does not parse (above)"
  # The name `go build` gives the module's root package: its path's last element, or the one
  # before a major version suffix (example.com/app/v2 → app).
  root_name=${module##*/}
  case $root_name in v[0-9]*) root_name=${module%/*} root_name=${root_name##*/} ;; esac
  # shellcheck disable=SC2016 # a Go template, not a shell expansion
  go list -f '{{if eq .Name "main"}}{{.ImportPath}} {{.Dir}}{{end}}' ./... >/tmp/main-packages ||
    fail "go list could not load the packages (above): fix the errors it names"
  mkdir -p /app/bin
  built="" count=0 root=""
  while read -r package dir; do
    if [ -z "$package" ]; then continue; fi
    if [ "$dir" = /app ]; then name=$root_name root=$name; else name=${dir##*/}; fi
    case " $built " in *" $name "*)
      fail "two main packages would both be /app/bin/$name (one is $package): rename a directory" ;;
    esac
    go build -o "/app/bin/$name" "$package" || fail "go build $package failed (above)"
    echo "  /app/bin/$name  ($package)"
    built="$built $name" count=$((count + 1))
  done </tmp/main-packages
  if [ "$count" = 0 ]; then
    fail "no main package in $module: Billowin builds each \`package main\` (the module's root," \
      "or cmd/<name>) into /app/bin/<name>"
  fi
  # The default web command is /app/bin/web: the root package's (or the only one's), unless a
  # package is itself called web.
  case " $built " in *" web "*) ;; *)
    only=${built# }
    if [ -n "$root" ]; then only=$root; fi
    if [ -n "$root" ] || [ "$count" = 1 ]; then
      ln -f "/app/bin/$only" /app/bin/web
      echo "  /app/bin/web  (the same as /app/bin/$only)"
    fi
    ;;
  esac
  ;;
ruby)
  export BUNDLE_SILENCE_ROOT_WARNING=1
  if [ -n "$BILLOWIN_RUBYGEMS_MIRROR" ]; then
    bundle config set --global mirror.https://rubygems.org "$BILLOWIN_RUBYGEMS_MIRROR"
  fi
  step "$(ruby --version), $(bundle --version)"
  if [ "$STAGE" != deps ]; then
    step "Checking the source parses"
    find /app -path /app/vendor -prune -o -name '*.rb' -type f -print | while read -r file; do
      ruby -c "$file" >/dev/null || { echo "error: syntax error in ${file#/app/}" >&2; exit 1; }
    done
  fi
  if [ -f Gemfile ]; then
    # As Heroku: without the development and test groups; frozen to Gemfile.lock when there is
    # one. (Not `deployment`: that installs into vendor/bundle, where the gems the base image
    # has, Debian's ruby-* packages, do not count.) Set in every stage: /app/.bundle/config is
    # what `bundle exec` reads at run time too.
    bundle config set --local without development:test
    if [ -f Gemfile.lock ]; then bundle config set --local frozen true; fi
  fi
  if [ "$STAGE" = app ]; then
    step "Dependencies unchanged: the gems are already installed"
  elif [ -f Gemfile ]; then
    step "Installing gems (bundle install)"
    # Gems the base image already has (Debian's ruby-* packages) need no network.
    if ! bundle install --local; then
      step "Not all gems are local; fetching from the gem server"
      bundle install --jobs 2 ||
        fail "bundle install could not get every gem (above): the base image's gems (Debian's" \
          "ruby-* packages) or the gem server (BILLOWIN_RUBYGEMS_MIRROR) must have them"
    fi
  fi
  # Heroku's asset step: `rake assets:precompile` (then assets:clean) when the Rakefile has it.
  if [ "$STAGE" != deps ] && { [ -f Rakefile ] || [ -f rakefile ] || [ -f Rakefile.rb ]; }; then
    rake() { if [ -f Gemfile ]; then bundle exec rake "$@"; else command rake "$@"; fi; }
    export RACK_ENV="${RACK_ENV:-production}" RAILS_ENV="${RAILS_ENV:-production}" \
           SECRET_KEY_BASE_DUMMY=1
    step "Detecting rake tasks"
    if rake -P >/tmp/rake-tasks 2>&1; then
      for task in assets:precompile assets:clean; do
        if grep -qx "rake $task" /tmp/rake-tasks; then
          step "Running: rake $task"
          rake "$task" || fail "\`rake $task\` failed (its output is above)"
        fi
      done
    else
      cat /tmp/rake-tasks >&2
      warn "\`rake -P\` failed (above), so no rake task ran: does the Rakefile need a gem of" \
        "the development or test group?"
    fi
  fi
  ;;
*)
  echo "unknown language: $BILLOWIN_LANGUAGE" >&2
  exit 2
  ;;
esac

step "Build finished"
