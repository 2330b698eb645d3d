#!/usr/bin/env bash
# One entry point for a fresh Debian/Ubuntu machine with python3 (root or sudo):
#   ./dev.sh demo    build the bundled example context against a local mirror of docker.io
#   ./dev.sh test    run the whole test suite
#   ./dev.sh lint    ruff and mypy (CI runs it before the tests)
#   ./dev.sh bench   run the strategy benchmark (see benchmarks/)
# Each bootstraps what it needs: Debian packages when missing, a virtualenv, the package.
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v buildah >/dev/null 2>&1 || need_apt+=(buildah)  # the optional RUN backend, tested too
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v git >/dev/null 2>&1 || need_apt+=(git)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: ${need_apt[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.sealpy-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi

cmd="${1:-help}"
shift || true
case "$cmd" in
  demo)  exec .venv/bin/python examples/demo.py "$@" ;;
  test)  exec .venv/bin/python -m pytest -n 2 "$@" ;;
  lint)  .venv/bin/ruff check . && .venv/bin/ruff format --check . && exec .ci/typecheck ;;
  bench) exec .venv/bin/python -m nox -s bench -- "$@" ;;
  *) echo "usage: ./dev.sh demo|test|lint|bench" >&2; exit 2 ;;
esac
