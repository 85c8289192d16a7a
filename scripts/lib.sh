# Shared by scripts/test, scripts/with-servers and scripts/demo. Source it; do not run it.
#
# Everything it installs goes into the project-local .venv; every server it starts listens on
# 127.0.0.1 and is stopped when the calling script exits.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
UV_VERSION="0.9.30"
# The oldest Prefect the worker supports (README, "Supported Prefect versions"). The smoke test
# runs against a server of this version, its flows executed by the same version, beside the
# current one (scripts/requirements.txt). Its dependencies are taken as they were two days
# after its release: later ones break it (pydantic, for one), and they would change under it.
PREFECT_OLDEST="3.0.0"
PREFECT_OLDEST_DEPS_BEFORE="2024-09-05"
OLDEST_VENV="$ROOT/.venv-prefect-$PREFECT_OLDEST"
RUN_DIR="${PFNF_RUN_DIR:-$ROOT/.tmp/run-$$}"
PIDS=()

# Each step's line says how many seconds the script has run, so a slow step shows.
log() { printf '\033[1m==> [%ss] %s\033[0m\n' "$SECONDS" "$*" >&2; }

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
# INT and TERM end the script: a trap that only cleaned up would let it carry on with its next
# step. `exit` runs the EXIT trap, which stops what was started.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Creates .venv from the machine's python3 (uv cannot download interpreters here), installs the
# pinned uv with pip, then the pinned tools with uv. Re-running is cheap.
ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  if [ "$("$VENV/bin/uv" --version 2>/dev/null)" != "uv $UV_VERSION" ]; then
    log "installing uv $UV_VERSION"
    "$VENV/bin/python" -m pip install --quiet "uv==$UV_VERSION"
  fi
  local stamp="$VENV/.requirements.sha"
  local want
  want="$(cat "$ROOT/scripts/requirements.txt" | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing Python tools (scripts/requirements.txt)"
    "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" -r "$ROOT/scripts/requirements.txt"
    echo "$want" > "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}

# The oldest supported Prefect, in a virtualenv of its own; re-running is cheap.
ensure_oldest_prefect() {
  local stamp="$OLDEST_VENV/.installed"
  local want="prefect==$PREFECT_OLDEST, dependencies before $PREFECT_OLDEST_DEPS_BEFORE"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing Prefect $PREFECT_OLDEST into $OLDEST_VENV (the oldest supported version)"
    rm -rf "$OLDEST_VENV"
    "$VENV/bin/uv" venv --quiet --python python3 "$OLDEST_VENV"
    "$VENV/bin/uv" pip install --quiet --python "$OLDEST_VENV/bin/python" \
      --exclude-newer "$PREFECT_OLDEST_DEPS_BEFORE" "prefect==$PREFECT_OLDEST"
    echo "$want" > "$stamp"
  fi
}

free_port() {
  "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Waits until a URL answers 2xx, or fails after $2 seconds.
wait_for() {
  local url="$1" seconds="${2:-90}" i
  for ((i = 0; i < seconds * 4; i++)); do
    if curl -sf -o /dev/null "$url"; then return 0; fi
    sleep 0.25
  done
  echo "timed out waiting for $url" >&2
  return 1
}

# Launches `prefect server` on 127.0.0.1 in the background with its own PREFECT_HOME (SQLite).
# Args: a name (for its folder and log), a port, then NAME=VALUE server settings. Prints nothing;
# pair it with await_prefect. PREFECT_BIN chooses another installation's `prefect`.
launch_prefect() {
  local name="$1" port="$2"
  shift 2
  local home="$RUN_DIR/$name"
  mkdir -p "$home"
  log "starting prefect server '$name' on 127.0.0.1:$port"
  env PREFECT_HOME="$home" PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_SERVER_UI_ENABLED=false \
      PREFECT_API_URL= PREFECT_API_KEY= PREFECT_API_AUTH_STRING= "$@" \
    "${PREFECT_BIN:-$VENV/bin/prefect}" server start --host 127.0.0.1 --port "$port" \
    >"$RUN_DIR/$name.log" 2>&1 &
  PIDS+=("$!")
}

await_prefect() {
  local name="$1" port="$2"
  if ! wait_for "http://127.0.0.1:$port/api/health" 180; then
    tail -50 "$RUN_DIR/$name.log" >&2
    return 1
  fi
}

# The server the tests and the demo use; exports PREFECT_API_URL and PREFECT_HOME.
# Args: port (default: a free one), "ui" to keep the UI on.
start_prefect() {
  local port="${1:-$(free_port)}" ui="${2:-}"
  launch_prefect prefect "$port" PREFECT_SERVER_UI_ENABLED="$([ "$ui" = ui ] && echo true || echo false)"
  await_prefect prefect "$port"
  export PREFECT_API_URL="http://127.0.0.1:$port/api"
  export PREFECT_HOME="$RUN_DIR/prefect"
}

# moto's server on 127.0.0.1, standing in for AWS Secrets Manager; exports PFNF_TEST_MOTO_URL.
launch_moto() {
  MOTO_PORT="$(free_port)"
  log "starting moto_server on 127.0.0.1:$MOTO_PORT"
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$RUN_DIR/moto.log" 2>&1 &
  PIDS+=("$!")
}

await_moto() {
  wait_for "http://127.0.0.1:$MOTO_PORT/moto-api/" 60 || { tail -20 "$RUN_DIR/moto.log" >&2; return 1; }
  export PFNF_TEST_MOTO_URL="http://127.0.0.1:$MOTO_PORT"
}

# The servers the test suite needs, started side by side: the open Prefect server
# (PREFECT_API_URL), one with basic auth and CSRF protection (PFNF_TEST_AUTH_API_URL,
# PFNF_TEST_AUTH_STRING), one of the oldest supported version (PFNF_TEST_OLDEST_API_URL, its
# installation in PFNF_TEST_OLDEST_VENV; ensure_oldest_prefect installs it), and moto
# (PFNF_TEST_MOTO_URL).
start_test_servers() {
  launch_test_servers
  await_test_servers
}

# The two halves of start_test_servers, for a caller with other work to do while the servers
# start (they take tens of seconds).
launch_test_servers() {
  TEST_PORT="$(free_port)"
  TEST_AUTH_PORT="$(free_port)"
  TEST_AUTH="admin:test-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  # Runs are only "Late" after 5 minutes here: the late-runs service rewrites every overdue
  # run's state every 5 s, which on SQLite starves the tests' own writes.
  local quiet=PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS=300
  launch_prefect prefect "$TEST_PORT" "$quiet"
  launch_prefect prefect-auth "$TEST_AUTH_PORT" "$quiet" PREFECT_SERVER_API_AUTH_STRING="$TEST_AUTH" \
    PREFECT_SERVER_CSRF_PROTECTION_ENABLED=true
  # 3.0 knows its settings by older names, and this one as a duration.
  TEST_OLDEST_PORT="$(free_port)"
  PREFECT_BIN="$OLDEST_VENV/bin/prefect" launch_prefect prefect-oldest "$TEST_OLDEST_PORT" \
    PREFECT_API_SERVICES_LATE_RUNS_AFTER_SECONDS=PT300S PREFECT_UI_ENABLED=false
  launch_moto
}

await_test_servers() {
  await_prefect prefect "$TEST_PORT"
  await_prefect prefect-auth "$TEST_AUTH_PORT"
  await_prefect prefect-oldest "$TEST_OLDEST_PORT"
  await_moto
  export PREFECT_API_URL="http://127.0.0.1:$TEST_PORT/api" PREFECT_HOME="$RUN_DIR/prefect"
  export PFNF_TEST_AUTH_API_URL="http://127.0.0.1:$TEST_AUTH_PORT/api" PFNF_TEST_AUTH_STRING="$TEST_AUTH"
  export PFNF_TEST_OLDEST_API_URL="http://127.0.0.1:$TEST_OLDEST_PORT/api"
  export PFNF_TEST_OLDEST_VENV="$OLDEST_VENV"
}

# `cargo lambda build --release --arm64` (zig links for arm64), then the artifact sizes.
build_lambda_release() {
  if ! rustup target list --installed | grep -q '^aarch64-unknown-linux-gnu$'; then
    rustup target add aarch64-unknown-linux-gnu
  fi
  cargo lambda build --release --arm64 --bin dispatch --bin webhook
  local bin
  for bin in dispatch webhook; do
    printf '%s: %s bytes (%s)\n' "$bin" "$(stat -c %s "target/lambda/$bin/bootstrap")" \
      "$(file -b "target/lambda/$bin/bootstrap" | cut -d, -f1-2)"
  done
}
