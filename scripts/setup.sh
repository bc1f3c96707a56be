#!/usr/bin/env bash
# Installs everything Jiansuo needs on a fresh Debian 12 machine (run as root, idempotent):
# apt packages, pgvector built from Debian's source package, and the Python environment in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_MAJOR=15
APT_PACKAGES=(
  build-essential gettext
  flite  # speaks the registration captcha for those who cannot read it
  postgresql postgresql-server-dev-$PG_MAJOR redis-server
  chromium chromium-driver fonts-wqy-microhei
  dataset-fashion-mnist
)

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian 12 ships no pgvector binary package; build Debian's own source package (from trixie)
# against this PostgreSQL's server headers.
if [ ! -f "/usr/share/postgresql/$PG_MAJOR/extension/vector.control" ]; then
  log "building pgvector for PostgreSQL $PG_MAJOR from Debian's source package"
  # The Debian archive this machine is already configured with (its own mirror), for the source
  # package of the next release.
  . /etc/os-release
  archive=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' |
            awk -v r="$VERSION_CODENAME" '$2 == r {print $1; exit}')
  if [ -z "$archive" ]; then
    echo "setup: no apt source for Debian $VERSION_CODENAME is configured; cannot fetch pgvector's source" >&2
    exit 1
  fi
  work=$(mktemp -d)
  mkdir -p "$work/lists/partial"
  cat > "$work/src.sources" <<SRC
Types: deb-src
URIs: $archive
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_src=(-o "Dir::Etc::SourceList=$work/src.sources" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$work/lists")
  (cd "$work" && apt-get "${apt_src[@]}" update -qq && apt-get "${apt_src[@]}" source --download-only pgvector -qq 2>/dev/null)
  tar -xzf "$work"/pgvector_*.orig.tar.gz -C "$work"
  make -C "$work"/pgvector-*/ -j"$(nproc)" PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config OPTFLAGS="" >/dev/null
  make -C "$work"/pgvector-*/ install PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config >/dev/null
  rm -rf "$work"
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import jiansuo, django, playwright" 2>/dev/null || [ pyproject.toml -nt .venv/.installed ]; then
  log "pip: installing jiansuo[dev] into .venv"
  .venv/bin/pip install -q --upgrade pip
  # torch==2.13.0 first: it is the local CPU wheel; a bare `torch` requirement would fetch a CUDA build.
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[dev]"
  touch .venv/.installed
fi
log "ready: .venv/bin/jiansuo"
