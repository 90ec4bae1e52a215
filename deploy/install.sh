#!/usr/bin/env bash
# Installs what a fresh Debian machine needs, builds the workspace in release mode, installs
# cri-server with its default config and starts it. Run as root from a checkout:
#   sudo deploy/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2046
apt-get install -y -qq --no-install-recommends $(cat deploy/packages-runtime.txt)

if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "install.sh: no Rust toolchain: install Rust 1.95 with rustup (https://rustup.rs), then run again" >&2
    exit 1
  fi
fi

cargo build --release --workspace --bins
install -m 0755 target/release/cri-server /usr/local/bin/cri-server
# The per-pod monitor sits next to the daemon, which finds it there.
install -m 0755 target/release/cri-monitor /usr/local/bin/cri-monitor
install -m 0755 target/release/cri-exec /usr/local/bin/cri-exec
install -d -m 0755 /opt/cni/bin
install -m 0755 target/release/cni-bridge /opt/cni/bin/cni-bridge
install -d -m 0755 /etc/cri-server /etc/cri-server/certs.d
[ -f /etc/cri-server/config.toml ] || install -m 0644 deploy/config.toml /etc/cri-server/config.toml
/usr/local/bin/cri-server --config /etc/cri-server/config.toml config check >/dev/null

if [ -d /run/systemd/system ]; then
  install -m 0644 deploy/cri-server.service /etc/systemd/system/cri-server.service
  systemctl daemon-reload
  systemctl enable --now cri-server
  echo "cri-server started by systemd; socket /run/cri-server/cri-server.sock"
else
  # No systemd (containers, CI machines): run it in the background, logging to a file.
  if pid=$(pgrep -x cri-server); then
    echo "cri-server already running (pid $pid)"
  else
    nohup /usr/local/bin/cri-server --config /etc/cri-server/config.toml \
      >>/var/log/cri-server.log 2>&1 </dev/null &
    for _ in $(seq 100); do
      [ -S /run/cri-server/cri-server.sock ] && break
      sleep 0.1
    done
    [ -S /run/cri-server/cri-server.sock ] || { tail -20 /var/log/cri-server.log; exit 1; }
    echo "cri-server started (pid $!); log /var/log/cri-server.log; socket /run/cri-server/cri-server.sock"
  fi
fi
