#!/usr/bin/env bash
# Builds the two .deb packages from the binaries in $CARGO_TARGET_DIR/debug (the agent's built
# with --features genicam,v4l2, as the release is), installs them on this machine, checks the
# agent package's camera support (its dependency on Aravis, the cameras it lists), verifies the
# installed units, lints the packages, then starts the packaged
# binaries as the packaged user with the packaged example configuration (only the keys added,
# and the embedded MQTT broker moved off 1883, where Mosquitto listens, to 18830; the ports
# they take must be free, or the check says which process holds one) and checks a part goes
# from the agent's synthetic camera into the cloud. Run by .ci/run as root.
#
# Release packages: `cargo deb -p wiko-agent` and `cargo deb -p wiko-cloud` (release profile).
set -euo pipefail
cd "$(dirname "$0")/.."

debs=$(mktemp -d)
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$debs" "$work"
}
trap cleanup EXIT

# Something accepts connections on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The packaged services listen on fixed ports: each must be free, or the checks below would
# talk to another process (or the service would not start). One still closing (a previous
# run's) is waited for, 10 s at most; then the port's holder is named and the check fails.
need_free_port() {
    local port=$1 what=$2
    for _ in $(seq 1 20); do
        listening "$port" || return 0
        sleep 0.5
    done
    echo "port $port ($what) is in use on 127.0.0.1; free it before this check. Held by:"
    ss -Hltnp "sport = :$port" 2>/dev/null || echo "(ss could not say)"
    exit 1
}

# A background process of this check still runs: otherwise its log's end, and fail.
running() {
    local pid=$1 what=$2 log=$3
    kill -0 "$pid" 2>/dev/null && return 0
    echo "the packaged $what exited:"
    tail -n 30 "$log"
    exit 1
}

for p in wiko-agent wiko-cloud; do
    # The dev profile: CI does not build a release; cargo-deb warns about it.
    cargo deb -p "$p" --no-build --profile dev -o "$debs/" 2>&1 | grep -v "^ " | grep -v "dev profile is not supported" || true
done
ls "$debs"/*.deb
dpkg -i "$debs"/*.deb
systemd-analyze verify --man=no /usr/lib/systemd/system/wiko-agent.service \
    /usr/lib/systemd/system/wiko-cloud.service
lintian --fail-on error --suppress-tags no-manual-page,non-standard-file-perm "$debs"/*.deb

# The agent package carries GenICam and V4L2 support: it depends on the Aravis library it links,
# and `wiko-agent cameras` looks for both kinds (Aravis's fake GigE Vision camera answers on
# the loopback interface).
depends=$(dpkg-query -W -f='${Depends}' wiko-agent)
echo "wiko-agent depends on: $depends"
if [[ "$depends" != *libaravis-0.8-0* ]]; then
    echo "the agent package does not depend on libaravis-0.8-0"
    exit 1
fi
arv-fake-gv-camera-0.8 -i 127.0.0.1 >"$work/gige.log" 2>&1 &
pids+=($!)
# The fake camera answers discovery once it has started: asked again for 10 s at most.
for _ in $(seq 1 20); do
    cameras=$(runuser -u wiko -- /usr/bin/wiko-agent cameras)
    if grep -q '^genicam .*Fake' <<<"$cameras"; then break; fi
    sleep 0.5
done
echo "$cameras"
if [[ "$cameras" == *"not built in"* ]] || ! grep -q '^v4l2' <<<"$cameras" ||
    ! grep -q '^genicam .*Fake' <<<"$cameras"; then
    echo "the packaged agent does not list V4L2 and GenICam cameras"
    cat "$work/gige.log"
    exit 1
fi
kill "${pids[-1]}" 2>/dev/null || true
unset 'pids[-1]'

# The unit's StateDirectory= and the hot folder, as systemd and the plant would provide them.
install -d -o wiko -g wiko -m 0750 /var/lib/wiko-agent /var/lib/wiko-cloud /srv/wiko/drop
key=ci-package-device-key-0000001
printf '%s' "$key" > /etc/wiko/keys/agent
printf '%s' "$key" > /etc/wiko/keys/device
# The example's snapshot camera logs in with a password from a file.
printf '%s' "ci-camera-password" > /etc/wiko/camera.password
chgrp wiko /etc/wiko/keys/agent /etc/wiko/keys/device /etc/wiko/camera.password
chmod 0640 /etc/wiko/keys/agent /etc/wiko/keys/device /etc/wiko/camera.password
runuser -u wiko -- /usr/bin/wiko-cloud validate --config /etc/wiko/cloud.toml
runuser -u wiko -- /usr/bin/wiko-agent validate --config /etc/wiko/agent.toml

# The example's ports: the cloud's API, its embedded broker (moved off 1883, where Mosquitto
# listens, to 18830), the agent's HTTP.
broker=18830
need_free_port 5001 "the packaged cloud's API"
need_free_port "$broker" "the packaged cloud's embedded MQTT broker"
need_free_port 9464 "the packaged agent's HTTP"
WIKO_CLOUD__MQTT__EMBEDDED_LISTEN=127.0.0.1:$broker \
    runuser -u wiko -- /usr/bin/wiko-cloud serve --config /etc/wiko/cloud.toml >"$work/cloud.log" 2>&1 &
cloud=$!
pids+=("$cloud")
# The cloud first (its store migrated, its broker listening), 60 s at most, then the agent.
up=
for _ in $(seq 1 120); do
    running "$cloud" cloud "$work/cloud.log"
    if curl -sf http://127.0.0.1:5001/health >/dev/null && listening "$broker"; then
        up=1
        break
    fi
    sleep 0.5
done
if [ -z "$up" ]; then
    echo "the packaged cloud did not answer on 5001 and $broker within 60 s"
    tail -n 30 "$work/cloud.log"
    exit 1
fi
runuser -u wiko -- /usr/bin/wiko-agent run --config /etc/wiko/agent.toml >"$work/agent.log" 2>&1 &
agent=$!
pids+=("$agent")

# The example's viewer key is the one whose SHA-256 the example holds.
for _ in $(seq 1 120); do
    running "$cloud" cloud "$work/cloud.log"
    running "$agent" agent "$work/agent.log"
    n=$(curl -sf -H "X-API-Key: 123456" "http://127.0.0.1:5001/api/v1/analyses?limit=5" |
        python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))' 2>/dev/null || echo 0)
    if [ "$n" -gt 0 ]; then
        echo "packaged agent -> packaged cloud: $n parts"
        curl -sf http://127.0.0.1:9464/healthz
        echo
        exit 0
    fi
    sleep 0.5
done
echo "no part reached the packaged cloud"
tail -n 30 "$work/cloud.log" "$work/agent.log"
exit 1
