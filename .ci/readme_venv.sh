#!/usr/bin/env bash
# The README as a new user meets it, in a fresh virtual environment of its own (not CI's dev one):
# its demo line verbatim, every python snippet and the iExec shell lines against a started
# `reactive-tasks emulate`, and its pytest example with the plugin loaded from the installed
# entry point. The blocks come from README.md itself (.ci/readme.py), so the two cannot drift.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
work="$(mktemp -d)"
emulator_pid=""
cleanup() {
    if [ -n "$emulator_pid" ]; then kill "$emulator_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

python3 -m venv "$work/venv"
. "$work/venv/bin/activate"
export PIP_QUIET=1 PIP_DISABLE_PIP_VERSION_CHECK=1

echo "== README: the demo line, verbatim"
demo="$(python .ci/readme.py block demo)"
echo "$ $demo"
start=$SECONDS
bash -euo pipefail -c "$demo" > "$work/demo.out"
tail -n 1 "$work/demo.out"
echo "demo: exit 0 in $((SECONDS - start)) s"

echo "== README: snippets against reactive-tasks emulate"
reactive-tasks emulate --port 0 > "$work/emulate.out" 2>&1 &
emulator_pid=$!
for _ in $(seq 200); do
    grep -q "listening on" "$work/emulate.out" && break
    kill -0 "$emulator_pid" 2>/dev/null || break
    sleep 0.1
done
url="$(sed -n 's/^reactive-tasks emulator listening on //p' "$work/emulate.out")"
if [ -z "$url" ]; then
    echo "reactive-tasks emulate did not start:" >&2
    cat "$work/emulate.out" >&2
    exit 1
fi
python .ci/readme.py snippets "$work/snippets" "$url"
for snippet in "$work"/snippets/*.py; do
    echo "-- $(basename "$snippet")"
    (cd "$work" && timeout 120 python "$snippet" > "$snippet.out" 2>&1) || {
        echo "README snippet failed: $(basename "$snippet")" >&2
        cat "$snippet" "$snippet.out" >&2
        exit 1
    }
done
python .ci/readme.py block iexec-shell | sed "s#http://127.0.0.1:8765#$url#g" > "$work/iexec.sh"
(cd "$work" && timeout 120 bash -euo pipefail iexec.sh > iexec.out) || {
    echo "README iExec shell lines failed" >&2
    cat "$work/iexec.sh" "$work/iexec.out" >&2
    exit 1
}
tail -n 1 "$work/iexec.out"
kill "$emulator_pid"
wait "$emulator_pid" || true
emulator_pid=""

echo "== README: the pytest example, the fixture from the installed plugin"
bash -euo pipefail -c "$(python .ci/readme.py block pytest-install)"
mkdir "$work/user-tests"
python .ci/readme.py block pytest-example > "$work/user-tests/test_coins.py"
(cd "$work/user-tests" && python -m pytest -q -p no:cacheprovider test_coins.py)
