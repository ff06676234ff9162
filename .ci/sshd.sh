#!/usr/bin/env bash
# Real sshd for the host tests (tests/hosts_ssh.rs): three instances on 127.0.0.1, ports
# 22221-22223, each letting in one user of its own (pexen-h1, pexen-h2, pexen-h3, created here
# with homes under the state directory) with a key made here. Idempotent.
#
#   .ci/sshd.sh          install openssh-server if needed, generate keys, start the daemons
#   .ci/sshd.sh stop     stop them (by the PIDs recorded in the state directory)
#
# State directory: target/ci-sshd in the repository (override with PEXEN_SSHD_DIR). The tests
# read PEXEN_TEST_SSH_DIR (default: that same directory): ssh_config there names the hosts
# h1, h2, h3; id_ed25519 is the key they accept, id_wrong a key they do not.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${PEXEN_SSHD_DIR:-$PWD/target/ci-sshd}"
ports=(22221 22222 22223)

stop() {
  for i in 1 2 3; do
    pidfile="$dir/sshd$i.pid"
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
}

if [ "${1:-}" = stop ]; then
  stop
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "sshd.sh: run as root (it creates the test users pexen-h1..3 and starts sshd)" >&2
  exit 1
fi
if ! [ -x /usr/sbin/sshd ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
fi

mkdir -p "$dir" /run/sshd
chmod 755 "$dir"
[ -f "$dir/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/host_ed25519"
[ -f "$dir/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/id_ed25519"
[ -f "$dir/id_wrong" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/id_wrong"
cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
chmod 644 "$dir/authorized_keys"

: > "$dir/known_hosts"
: > "$dir/ssh_config"
stop
for i in 1 2 3; do
  user="pexen-h$i"
  home="$dir/home$i"
  port="${ports[$((i - 1))]}"
  if ! id "$user" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir "$home" --shell /bin/sh "$user"
  fi
  # A usable account (not locked) without a password: keys only.
  usermod -p '*' -d "$home" "$user"
  mkdir -p "$home"
  chown "$user" "$home"
  chmod 755 "$home"
  # A daemon of another checkout on the port would answer with another host key.
  if command -v ss >/dev/null && [ -n "$(ss -Hltn "sport = :$port")" ]; then
    echo "sshd.sh: port $port is taken by another process ($(ss -Hltnp "sport = :$port" | grep -o 'pid=[0-9]*' | head -1)): stop it (.ci/sshd.sh stop in the checkout that started it)" >&2
    exit 1
  fi
  cat > "$dir/sshd$i.conf" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
PidFile $dir/sshd$i.pid
AuthorizedKeysFile $dir/authorized_keys
AllowUsers $user
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
LogLevel ERROR
EOF
  /usr/sbin/sshd -f "$dir/sshd$i.conf" -E "$dir/sshd$i.log"
  echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_ed25519.pub")" >> "$dir/known_hosts"
  cat >> "$dir/ssh_config" <<EOF
Host h$i
  HostName 127.0.0.1
  Port $port
  User $user
EOF
done
cat >> "$dir/ssh_config" <<EOF
Host *
  IdentityFile $dir/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $dir/known_hosts
  StrictHostKeyChecking yes
  LogLevel ERROR
EOF
for i in 1 2 3; do
  for _ in $(seq 50); do [ -s "$dir/sshd$i.pid" ] && break; sleep 0.1; done
done
ssh -F "$dir/ssh_config" -o BatchMode=yes h1 true
echo "sshd: h1 h2 h3 on 127.0.0.1:${ports[*]}; ssh config: $dir/ssh_config"
