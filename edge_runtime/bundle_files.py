"""The three text files of a bundle (bundle.py): install.sh, the clinic station's systemd unit and
the one-page README for clinic IT. Placeholders are @NAME@, filled from the bundle's bundle.json."""

from __future__ import annotations

from pathlib import Path

INSTALL_SH = r"""#!/bin/sh
# Installs edgecxr @VERSION@ and its model(s) from this folder alone: no network is used.
# Usage: ./install.sh [--prefix DIR] [--no-service]   (default DIR: /opt/edgecxr as root, else ~/edgecxr)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" = 0 ]; then prefix=/opt/edgecxr; else prefix="$HOME/edgecxr"; fi
service=1
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --no-service) service=0; shift ;;
        *) echo "install.sh: unknown option $1 (use --prefix DIR, --no-service)" >&2; exit 2 ;;
    esac
done
fail() { echo "install.sh: $*" >&2; exit 1; }
cd "$here"

echo "[1/5] checking every file against MANIFEST.sha256"
sha256sum --check --strict --quiet MANIFEST.sha256 \
    || fail "a file of this bundle is damaged or was changed: copy the bundle again"

echo "[2/5] checking this machine"
[ "$(uname -m)" = "@PLATFORM@" ] || fail "this bundle is for @PLATFORM@, this machine is $(uname -m)"
python=${PYTHON:-python3}
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
    || fail "no $python: install Python @PYTHON@ (sudo apt install python3 python3-venv)"
[ "$pyver" = "@PYTHON@" ] || fail "this bundle is for Python @PYTHON@, $python is $pyver"

echo "[3/5] installing into $prefix/venv (no network)"
"$python" -m venv "$prefix/venv" || fail "cannot create a virtualenv: sudo apt install python3-venv"
# Only this bundle's wheels: no index, and no pip configuration of this machine.
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CONSTRAINT PIP_REQUIRE_VIRTUALENV
pip="$prefix/venv/bin/python -m pip"
$pip install --quiet --no-index --find-links wheels --no-deps wheels/edgecxr-*.whl
$pip install --quiet --no-index --find-links wheels -r requirements.txt

echo "[4/5] copying the model(s) to $prefix/models and running edgecxr doctor"
mkdir -p "$prefix/models"
cp models/* "$prefix/models/"
for model in @MODELS@; do
    "$prefix/venv/bin/edgecxr" doctor "$prefix/models/$model" || fail "edgecxr doctor failed for $model"
done

echo "[5/5] clinic station service"
if [ "$service" = 0 ]; then
    echo "skipped (--no-service)"
elif ! "$prefix/venv/bin/edgecxr" serve --help >/dev/null 2>&1; then
    echo "this edgecxr has no 'serve' command: no service installed"
elif [ "$(id -u)" != 0 ] || [ ! -d /etc/systemd/system ]; then
    echo "not root or no systemd: start the station by hand with"
    echo "  $prefix/venv/bin/edgecxr serve $prefix/models/@STATION_MODEL@"
else
    # Off loopback the station asks for a token: one kept across restarts, readable by root only
    # (systemd hands it to the unprivileged service as a credential), shown here once.
    token_file=/etc/edgecxr/station.token
    if [ ! -s "$token_file" ]; then
        mkdir -p /etc/edgecxr
        (umask 077 && "$prefix/venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))' > "$token_file")
    fi
    sed "s#@PREFIX@#$prefix#g" edgecxr-station.service > /etc/systemd/system/edgecxr-station.service
    echo "station access token (in $token_file): $(head -n 1 "$token_file")"
    echo "open http://THIS-MACHINE:8080/?token=$(head -n 1 "$token_file") from the clinic's network"
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload && systemctl enable --now edgecxr-station.service
        echo "edgecxr-station.service enabled and started (port 8080)"
    else
        echo "installed /etc/systemd/system/edgecxr-station.service (systemd not running: enable it after boot)"
    fi
fi
echo "done: $prefix/venv/bin/edgecxr predict $prefix/models/@STATION_MODEL@ FOLDER_OF_XRAYS"
"""

SERVICE = """[Unit]
Description=edgecxr clinic station (chest X-ray: NORMAL vs PNEUMONIA)
After=network.target

[Service]
ExecStart=@PREFIX@/venv/bin/edgecxr serve @PREFIX@/models/@STATION_MODEL@ --host 0.0.0.0 --port 8080 --data-dir /var/lib/edgecxr --token-file %d/token
LoadCredential=token:/etc/edgecxr/station.token
DynamicUser=yes
StateDirectory=edgecxr
Restart=on-failure
# Descriptors for the station's connection cap (2000, edge_runtime/station/protocol.py) and its own files;
# memory for its decode slots at their budget (edge_runtime/decode_budget.py): past MemoryHigh the kernel
# reclaims and slows it, at MemoryMax it is stopped and restarted instead of taking the Pi down.
LimitNOFILE=4096
MemoryHigh=768M
MemoryMax=1G
TasksMax=128

[Install]
WantedBy=multi-user.target
"""

README = """edgecxr @VERSION@ offline bundle: for clinic IT
=================================================

What this is: the edgecxr program, its model(s) (@MODELS@) and every package they need for
Raspberry Pi OS 64-bit style machines (@PLATFORM@, Python @PYTHON@). Nothing is downloaded
while installing: the machine needs no network.

Install:

    tar xzf @ARCHIVE@.tar.gz
    cd @ARCHIVE@
    sudo ./install.sh            # into /opt/edgecxr; or ./install.sh --prefix ~/edgecxr

install.sh checks every file against MANIFEST.sha256 first and stops if one was damaged or
changed on the way (copy the bundle again), then installs, copies the models to
/opt/edgecxr/models and runs `edgecxr doctor` on each: it must say the model loads and runs.
If this edgecxr has the clinic station (`edgecxr serve`), install.sh also installs and starts
the edgecxr-station service (port 8080) so that it runs at every boot; --no-service skips it.
The station's access token is kept in /etc/edgecxr/station.token (root only); install.sh prints
the address to open with it. Staff on the clinic's network need that address once.

Use:

    /opt/edgecxr/venv/bin/edgecxr predict /opt/edgecxr/models/@STATION_MODEL@ FOLDER_OF_XRAYS
    /opt/edgecxr/venv/bin/edgecxr doctor /opt/edgecxr/models/@STATION_MODEL@

Needs: Raspberry Pi OS 64-bit (Bookworm) or Debian 12 on @PLATFORM@ with python3 and
python3-venv (installed by default on Raspberry Pi OS). 32-bit Raspberry Pi OS is not
supported: the inference runtimes publish no 32-bit ARM packages.

If something fails: the message names the step. Send the output of `edgecxr doctor` and the
file bundle.json (what this bundle holds, and when it was built) to the person who built it.
"""

SUBSTITUTED = {"install.sh": INSTALL_SH, "edgecxr-station.service": SERVICE, "README.txt": README}


def fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    return template


def write_files(root: Path, info: dict) -> None:
    """install.sh, edgecxr-station.service and README.txt in the bundle folder `root`.
    @PREFIX@ in the service file is left for install.sh, which knows where it installed."""
    models = list(info["models"])
    values = {"VERSION": info["edgecxr"], "PLATFORM": info["platform"], "PYTHON": info["python"],
              "MODELS": " ".join(models), "STATION_MODEL": models[0], "ARCHIVE": root.name}
    for name, template in SUBSTITUTED.items():
        (root / name).write_text(fill(template, values), encoding="utf-8")
    (root / "install.sh").chmod(0o755)
