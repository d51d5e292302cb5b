#!/usr/bin/env bash
# Install aitbc-miner as a systemd service on Debian 12 (run as root; safe to run again).
#
#   deploy/install.sh [--no-systemd] [--no-apt] [SOURCE]
#
# SOURCE is a checkout of this repository (default: the one this script is in) or a built
# wheel. The script:
#   - installs bubblewrap (the job sandbox) and Python's venv module (apt-get);
#   - creates the system group and user aitbc-miner (the service) and the user aitbc-job
#     (jobs of a miner run as root; docs/sandbox.md);
#   - makes a virtual environment in /opt/aitbc-miner (root-owned: the service cannot
#     change its own code) and installs SOURCE into it with pip (PyPI for dependencies);
#   - makes /etc/aitbc-miner (0750 root:aitbc-miner) with config.yaml (from
#     config.example.yaml when absent, 0640 root:aitbc-miner) and allowlist.d/;
#   - installs deploy/aitbc-miner.service in /etc/systemd/system and reloads systemd.
# --no-systemd skips what needs a running systemd (daemon-reload); --no-apt skips
# apt-get. The miner key is not written here: put it in /etc/aitbc-miner/miner.key
# (root, 0600); the unit hands it to the miner as a credential. See docs/service.md.
set -euo pipefail
umask 022

PREFIX=/opt/aitbc-miner
ETC=/etc/aitbc-miner
STATE=/var/lib/aitbc-miner
UNIT_DIR=/etc/systemd/system
SERVICE_USER=aitbc-miner
JOB_USER=aitbc-job
PYTHON=/usr/bin/python3  # the system's: the service user must be able to read it

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source_path="$(dirname "$here")"
use_systemd=1
use_apt=1
for arg in "$@"; do
  case "$arg" in
    --no-systemd) use_systemd=0 ;;
    --no-apt) use_apt=0 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
    *) source_path="$arg" ;;
  esac
done

say() { printf 'install.sh: %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root" >&2
  exit 2
fi
if [ ! -e "$source_path" ]; then
  echo "install.sh: no such source: $source_path" >&2
  exit 2
fi
source_path="$(realpath "$source_path")"

# --- packages -------------------------------------------------------------------------
if [ "$use_apt" = 1 ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in bubblewrap python3 python3-venv; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
fi
command -v bwrap >/dev/null 2>&1 || say "WARNING: bubblewrap (bwrap) is missing: process jobs will be refused"
if [ "$(cat /proc/sys/kernel/unprivileged_userns_clone 2>/dev/null || echo 1)" = 0 ]; then
  say "WARNING: kernel.unprivileged_userns_clone=0: the job sandbox needs user namespaces"
fi

# --- users ----------------------------------------------------------------------------
getent group "$SERVICE_USER" >/dev/null || groupadd --system "$SERVICE_USER"
if ! id "$SERVICE_USER" >/dev/null 2>&1; then
  useradd --system --gid "$SERVICE_USER" --home-dir "$STATE" --no-create-home \
    --shell /usr/sbin/nologin --comment "aitbc-miner service" "$SERVICE_USER"
fi
if ! id "$JOB_USER" >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --shell /usr/sbin/nologin \
    --comment "aitbc-miner jobs" "$JOB_USER"
fi

# --- the program ----------------------------------------------------------------------
if [ ! -x "$PREFIX/bin/python" ] || ! "$PREFIX/bin/python" -c "" 2>/dev/null; then
  say "creating the virtual environment $PREFIX"
  "$PYTHON" -m venv --clear "$PREFIX"
fi
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
if [ -d "$source_path" ]; then
  say "building $source_path"
  # From a clean copy: nothing stale in the checkout (build/, .venv) gets into the wheel.
  mkdir "$build/src"
  tar -C "$source_path" --exclude=./.git --exclude=./.venv --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -C "$build/src" -xf -
  "$PREFIX/bin/pip" wheel -q --no-deps --disable-pip-version-check -w "$build" "$build/src"
  wheel="$(ls "$build"/aitbc_miner-*.whl)"
else
  wheel="$source_path"
fi
say "installing $(basename "$wheel") into $PREFIX"
"$PREFIX/bin/pip" install -q --disable-pip-version-check "$wheel"  # dependencies
"$PREFIX/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$wheel"
chown -R root:root "$PREFIX"
chmod -R go-w "$PREFIX"
# On operators' PATH, for `aitbc-miner status`; never over a program of someone else's.
link=/usr/local/bin/aitbc-miner
if [ ! -e "$link" ] || [ "$(readlink "$link")" = "$PREFIX/bin/aitbc-miner" ]; then
  ln -sfn "$PREFIX/bin/aitbc-miner" "$link"
else
  say "WARNING: $link exists and is not ours; run $PREFIX/bin/aitbc-miner"
fi
if [ -f "$source_path/docs/service.md" ]; then
  install -D -m 0644 "$source_path/docs/service.md" "$PREFIX/share/doc/aitbc-miner/service.md"
fi

# --- configuration --------------------------------------------------------------------
install -d -m 0750 -o root -g "$SERVICE_USER" "$ETC" "$ETC/allowlist.d"
if [ ! -e "$ETC/config.yaml" ]; then
  example="$source_path/config.example.yaml"  # absent when SOURCE is a wheel
  {
    echo "# Installed by deploy/install.sh. Under systemd the unit sets paths.state_dir,"
    echo "# paths.data_dir, control.socket_dir and control.viewer_group in the environment,"
    echo "# which wins over this file: change those with \`systemctl edit aitbc-miner\`."
    echo "# The key is /etc/aitbc-miner/miner.key (root, 0600), not a key in this file."
    echo "# After an edit: \`systemctl reload aitbc-miner\` (docs/service.md says what"
    echo "# changes live and what needs \`systemctl restart aitbc-miner\`)."
    echo "#"
    if [ -f "$example" ]; then cat "$example"; fi
  } | install -m 0640 -o root -g "$SERVICE_USER" /dev/stdin "$ETC/config.yaml"
  say "wrote $ETC/config.yaml: set coordinator.url there"
fi
if [ -e "$ETC/miner.key" ]; then
  chown root:root "$ETC/miner.key"
  chmod 0600 "$ETC/miner.key"
fi
install -d -m 0700 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE"

# --- the unit -------------------------------------------------------------------------
install -D -m 0644 "$here/aitbc-miner.service" "$UNIT_DIR/aitbc-miner.service"
if [ "$use_systemd" = 1 ]; then
  systemctl daemon-reload
fi

say "installed. Next:"
[ -e "$ETC/miner.key" ] || say "  install -m 0600 /dev/stdin $ETC/miner.key <<<'<miner key>'"
say "  edit $ETC/config.yaml (coordinator.url), then: systemctl enable --now aitbc-miner"
say "  watch it: aitbc-miner status (root, or a member of group $SERVICE_USER)"
