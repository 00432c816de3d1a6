#!/bin/sh
# Install or upgrade syncd as a systemd service. Safe to run again: it keeps an existing
# configuration and secrets and upgrades the program in place.
#
#   sudo deploy/install.sh [--root DIR] [--python PYTHON] [SOURCE]
#
# SOURCE: a syncd wheel, sdist or checkout (default: the checkout holding this script).
# --root DIR: install below DIR instead of / (tests, image builds; systemd is not told).
#
# What it does:
#   /opt/syncd/venv                   a virtual environment with syncd (the unit's ExecStart=)
#   /usr/local/bin/syncd              a link to it, for the operator
#   /etc/syncd/config.yaml            from deploy/config.yaml, only when there is none (0644, no secrets)
#   /etc/syncd/credentials/           root only (0700); empty secret files (0600) when missing
#   /etc/systemd/system/syncd.service the unit (replaced: local changes belong in a drop-in)
# The database lives in /var/lib/syncd, which the unit's StateDirectory= creates for the
# service's own user on its first start. Nothing is fetched but syncd's dependencies,
# through pip from the package index it is configured with.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=""
python=${PYTHON:-python3}
source_path=""
prefix=/opt/syncd

die() { echo "install.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || die "--root needs a folder"; root=${2%/}; shift 2 ;;
        --python) [ $# -ge 2 ] || die "--python needs a program"; python=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$source_path" ] || die "one SOURCE only"; source_path=$1; shift ;;
    esac
done
[ -n "$source_path" ] || source_path=$(dirname "$here")
[ -e "$source_path" ] || die "$source_path: no such wheel, sdist or checkout"

if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    die "run it as root (sudo $0), or give --root DIR"
fi
command -v "$python" >/dev/null 2>&1 || die "$python not found: install Python 3.11 or newer"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "syncd needs Python 3.11 or newer; $python is $("$python" -c 'import sys; print(sys.version.split()[0])')"
"$python" -c 'import venv, ensurepip' 2>/dev/null \
    || die "$python cannot make a virtual environment: apt-get install python3-venv (Debian, Ubuntu) or dnf install python3 (RHEL family)"

venv="$root$prefix/venv"
if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv"
    install -d -m 0755 "$root$prefix"
    "$python" -m venv "$venv"
fi
echo "installing syncd from $source_path into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$source_path"
[ -x "$venv/bin/syncd" ] || die "$venv/bin/syncd was not installed"

install -d -m 0755 "$root/usr/local/bin"
ln -sfn "$prefix/venv/bin/syncd" "$root/usr/local/bin/syncd"

install -d -m 0755 "$root/etc/syncd"
install -d -m 0700 "$root/etc/syncd/credentials"
chmod 0700 "$root/etc/syncd/credentials"
if [ -e "$root/etc/syncd/config.yaml" ]; then
    echo "keeping $root/etc/syncd/config.yaml"
else
    install -m 0644 "$here/config.yaml" "$root/etc/syncd/config.yaml"
    echo "wrote $root/etc/syncd/config.yaml: edit it (Ultimo, Exchange, rooms)"
fi
for secret in ultimo-api-key ews-password; do
    if [ ! -e "$root/etc/syncd/credentials/$secret" ]; then
        install -m 0600 /dev/null "$root/etc/syncd/credentials/$secret"
        echo "made $root/etc/syncd/credentials/$secret (empty, root only): put the secret in it"
    fi
done

install -d -m 0755 "$root/etc/systemd/system"
install -m 0644 "$here/syncd.service" "$root/etc/systemd/system/syncd.service"
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

cat <<NEXT
syncd $("$venv/bin/python" -c 'from importlib.metadata import version; print(version("syncd"))' 2>/dev/null || echo "") installed.
Next (deploy/README.md, "Configure"):
  sudoedit /etc/syncd/config.yaml /etc/syncd/credentials/ultimo-api-key /etc/syncd/credentials/ews-password
  sudo CREDENTIALS_DIRECTORY=/etc/syncd/credentials syncd --config /etc/syncd/config.yaml config validate
  sudo systemctl enable --now syncd && curl -s 127.0.0.1:9310/healthz
NEXT
