#!/usr/bin/env bash
# The test server of the PostgreSQL gallery: Debian's PostgreSQL with pgvector, installed only when missing.
# Debian 12 ships PostgreSQL 15 without a pgvector package; its newer source package (pgvector 0.8.0)
# builds against postgresql-server-dev-15 in seconds. Debian's PostgreSQL started faster than pip's
# pgserver (bundled 16.2 + pgvector 0.6.2) and gets security updates: README, PostgreSQL backend.
set -euo pipefail
PG=${PG_MAJOR:-15}
if [ -e "/usr/share/postgresql/$PG/extension/vector.control" ] && [ -x "/usr/lib/postgresql/$PG/bin/initdb" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL $PG with pgvector is missing and installing it needs root: run make test as root once" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "postgresql-$PG" "postgresql-server-dev-$PG" dpkg-dev make gcc
# pgvector's source from the next Debian release, through a private source list: the system's apt setup stays as it is.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial"
echo "deb-src http://deb.debian.org/debian trixie main" > "$work/sources.list"
apt_private=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$work/lists")
apt-get "${apt_private[@]}" update -q
(cd "$work" && apt-get "${apt_private[@]}" source -q --download-only pgvector && dpkg-source -x --no-check pgvector_*.dsc pgvector)
make -C "$work/pgvector" -s -j2 PG_CONFIG="/usr/lib/postgresql/$PG/bin/pg_config" with_llvm=no
make -C "$work/pgvector" -s install PG_CONFIG="/usr/lib/postgresql/$PG/bin/pg_config" with_llvm=no
echo "installed pgvector into PostgreSQL $PG"
