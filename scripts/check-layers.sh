#!/usr/bin/env bash
# Checks that every source file includes only headers of the layers its own layer may use
# (docs/ARCHITECTURE.md): util <- remote, util <- cache, remote + cache <- core,
# core (+ cache) <- frontend, everything <- cli; the index (cache/meta_db.h) is private to
# src/cache/; the fanotify and FUSE frontends know nothing of each other. Prints each
# violation; exits 1 if any.
set -uo pipefail
cd "$(dirname "$0")/../src"
declare -A allowed=(
  [util]="util"
  [remote]="util remote"
  [cache]="util cache"
  [core]="util remote cache core"
  [frontend]="util cache core frontend"
  [cli]="util remote cache core frontend cli"
)
bad=0
for layer in "${!allowed[@]}"; do
  while IFS=: read -r file _ inc; do
    dep=$(echo "$inc" | sed -E 's/.*#include "([a-z_]+)\/.*/\1/')
    case " ${allowed[$layer]} " in
      *" $dep "*) ;;
      *) echo "layer violation: src/$file includes $dep/ (a $layer file may use: ${allowed[$layer]})"; bad=1 ;;
    esac
  done < <(grep -rnE '^#include "[a-z_]+/' "$layer" || true)
done
# The index is private to the cache: everyone else goes through CacheStore.
if grep -rnE '#include "cache/meta_db.h"' . | grep -v '^./cache/'; then
  echo "layer violation: the index (cache/meta_db.h) is private to src/cache/"; bad=1
fi
if grep -rnE '(\.|->)db\(\)' . | grep -v '^./cache/'; then
  echo "layer violation: CacheStore::db() is for src/cache/ and tests only"; bad=1
fi
# The two frontends know nothing of each other.
if grep -rnE '#include "frontend/fuse/' frontend/fanotify || grep -rnE '#include "frontend/fanotify/' frontend/fuse; then
  echo "layer violation: one frontend includes the other"; bad=1
fi
# Frontends never call a Remote.
if grep -rnE '#include "remote/' frontend; then
  echo "layer violation: a frontend includes a remote header"; bad=1
fi
[ "$bad" -eq 0 ] && echo "layers: ok"
exit "$bad"
