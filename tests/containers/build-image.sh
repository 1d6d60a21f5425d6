#!/usr/bin/env bash
# Builds a Postgres image locally, with no registry: the host's PostgreSQL 15
# (Debian's postgresql-15 under /usr/lib/postgresql/15), the shared libraries
# it needs (found with ldd), bash and a few coreutils, copied into a rootfs and
# `docker import`ed with tests/containers/docker-entrypoint.sh, which behaves
# like the official image's entrypoint. Tagged as the image the tests ask for.
#
#   tests/containers/build-image.sh [image]   # default: $STUCKLESS_PG_IMAGE or postgres:16-alpine
#
# Idempotent: an image already present under that name is kept. Whatever tag
# it gets, the server inside is the host's major version (15): the tag only
# has to match what the tests request, as no image can be pulled here.
set -euo pipefail

IMAGE="${1:-${STUCKLESS_PG_IMAGE:-postgres:16-alpine}}"
HERE="$(cd "$(dirname "$0")" && pwd)"
say() { echo "build-image: $*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "image=present $IMAGE"
  exit 0
fi

BIN="$( (ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true) | sort -V | tail -n 1)"
if [ -z "$BIN" ]; then
  say "no PostgreSQL under /usr/lib/postgresql/*/bin to copy (apt-get install postgresql-15)"; exit 1
fi
PGHOME="$(dirname "$BIN")"
MAJOR="$(basename "$PGHOME")"
if [ "$MAJOR" != 15 ]; then
  # The entrypoint's PATH names 15; keep the two in step.
  sed -i "s#/usr/lib/postgresql/15/bin#$BIN#" "$HERE/docker-entrypoint.sh"
fi

ROOT="$(mktemp -d /var/tmp/stuckless-pg-rootfs.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
say "rootfs $ROOT from $PGHOME"

# Debian's merged /usr: /bin, /lib, /lib64 and /sbin are links into /usr.
mkdir -p "$ROOT"/usr/{bin,lib,lib64,sbin} "$ROOT"/{etc,tmp,dev,proc,sys,run}
for d in bin lib lib64 sbin; do ln -s "usr/$d" "$ROOT/$d"; done
chmod 1777 "$ROOT/tmp"

# Copies absolute paths into the rootfs under the same paths (tar keeps
# owners, modes and links; the merged-/usr links above are kept).
copy() {
  local rel=()
  for p in "$@"; do rel+=("${p#/}"); done
  tar -C / -cf - "${rel[@]}" | tar -C "$ROOT" --keep-directory-symlink -xf -
}
copy "$PGHOME" "/usr/share/postgresql/$MAJOR" /usr/share/zoneinfo
[ -d /usr/lib/locale/C.utf8 ] && copy /usr/lib/locale/C.utf8

tools=(bash env mkdir chmod mktemp rm ls cat)
paths=()
for t in "${tools[@]}"; do paths+=("$(command -v "$t")"); done
copy "${paths[@]}"
# initdb and pg_ctl run their helpers through popen(3), i.e. /bin/sh.
[ -e "$ROOT/usr/bin/sh" ] || ln -s bash "$ROOT/usr/bin/sh"

# Every ELF copied, and the libraries each needs, transitively (ldd resolves that).
mapfile -t elves < <(find "$ROOT/usr" -type f \( -perm -u+x -o -name '*.so*' \) -print)
libs="$(for f in "${elves[@]}"; do
  host="${f#"$ROOT"}"
  ldd "$host" 2>/dev/null | awk '/=> \//{print $3} /^\s*\/.*ld-linux/{print $1}'
done | sort -u)"
for lib in $libs; do
  real="$(readlink -f "$lib")"
  [ -e "$ROOT$real" ] || copy "$real"
  # Keep the name ldd found (often a symlink to the versioned file).
  if [ "$lib" != "$real" ] && [ ! -e "$ROOT$lib" ]; then
    mkdir -p "$(dirname "$ROOT$lib")"
    ln -s "$real" "$ROOT$lib"
  fi
done

uid="$(id -u postgres 2>/dev/null || echo 999)"
gid="$(id -g postgres 2>/dev/null || echo 999)"
printf 'root:x:0:0:root:/root:/bin/bash\npostgres:x:%s:%s:PostgreSQL:/var/lib/postgresql:/bin/bash\n' "$uid" "$gid" >"$ROOT/etc/passwd"
printf 'root:x:0:\npostgres:x:%s:\n' "$gid" >"$ROOT/etc/group"
mkdir -p "$ROOT/var/lib/postgresql/data" "$ROOT/var/run/postgresql" "$ROOT/docker-entrypoint-initdb.d"
chown -R "$uid:$gid" "$ROOT/var/lib/postgresql" "$ROOT/var/run/postgresql"
chmod 2777 "$ROOT/var/run/postgresql"
install -m 0755 "$HERE/docker-entrypoint.sh" "$ROOT/usr/local/bin/docker-entrypoint.sh" 2>/dev/null \
  || { mkdir -p "$ROOT/usr/local/bin"; install -m 0755 "$HERE/docker-entrypoint.sh" "$ROOT/usr/local/bin/docker-entrypoint.sh"; }

say "importing as $IMAGE ($(du -sh "$ROOT" | cut -f1))"
tar -C "$ROOT" -c . | docker import \
  --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
  --change 'CMD ["postgres"]' \
  --change 'USER postgres' \
  --change 'ENV PGDATA=/var/lib/postgresql/data LANG=C.UTF-8' \
  --change 'EXPOSE 5432' \
  --change 'LABEL stuckless.image=local-postgres-15' \
  - "$IMAGE" >/dev/null
echo "image=built $IMAGE"
