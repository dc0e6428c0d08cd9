#!/usr/bin/env bash
# Install check of the built package, as a user gets it (CI runs it after `make test`; `make wheel-check`):
# build the wheel, install it into a FRESH venv (torch==2.13.0 first, then the wheel with [all]),
# and, outside the source tree, run `mrepo sim` + `import sim`, `mrepo serve` (anonymous reads),
# request the web page, its script and the JSON API, and `mrepo clone http://...` from the server.
# Exits non-zero on the first failure, with the step named on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
work=$(mktemp -d "${TMPDIR:-/tmp}/mrepo-wheel.XXXXXX")
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
step() { echo "== wheel-check: $*" >&2; }

step "build the wheel"
"$PYTHON" -m venv "$work/build-env"
"$work/build-env/bin/pip" install -q --upgrade pip build
"$work/build-env/bin/python" -m build --wheel --outdir "$work/dist" "$src" >/dev/null
wheel=$(ls "$work"/dist/mrepo-*.whl)
"$work/build-env/bin/python" - "$wheel" <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
missing = [n for n in ("mrepo/api/static/index.html", "mrepo/api/static/app.js") if n not in names]
sys.exit(f"wheel lacks {missing}" if missing else 0)
EOF

step "install torch==2.13.0, then $(basename "$wheel")[all] into a fresh venv"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip
"$work/venv/bin/pip" install -q torch==2.13.0
"$work/venv/bin/pip" install -q "$wheel[all]"
mrepo="$work/venv/bin/mrepo"
cd "$work"  # outside the source tree: everything comes from the installed wheel

step "init, sim, import"
"$mrepo" init lab.mrepo
"$mrepo" sim frames --out sim --seed 1 --species 1 --particles 4 --frames 2 --size 96 --box 32 >/dev/null
"$mrepo" --repo lab.mrepo import sim sim --copy

port=$("$work/venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step "serve on 127.0.0.1:$port"
"$mrepo" serve --repo lab.mrepo --port "$port" --anonymous-read --no-access-log >serve.log 2>&1 &
server=$!

step "page, script and API requests"
"$work/venv/bin/python" - "$port" <<'EOF'
import sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(300):
    try:
        urllib.request.urlopen(base + "/", timeout=2)
        break
    except OSError:
        time.sleep(0.1)
page = urllib.request.urlopen(base + "/", timeout=10).read().decode()
assert "<html" in page.lower() and "static/" in page, page[:200]
script = urllib.request.urlopen(base + "/static/app.js", timeout=10)
assert script.status == 200 and len(script.read()) > 100
api = urllib.request.urlopen(base + "/api/overview", timeout=10)
assert api.status == 200 and b"main" in api.read()
EOF

step "clone http:// without a token (anonymous reads)"
"$mrepo" clone "http://127.0.0.1:$port/repo" copy.mrepo
"$mrepo" --repo copy.mrepo log --json | "$work/venv/bin/python" -c \
  'import json, sys; log = json.load(sys.stdin); assert len(log) == 1, log'
"$mrepo" --repo copy.mrepo verify >/dev/null
step "ok"
