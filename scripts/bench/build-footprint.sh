#!/usr/bin/env bash
# What a service costs to build: cold release build time, binary size, and
# the crates it compiles, for each git revision given (default: the commit
# before the common crate was split by features, and HEAD), side by side.
#   scripts/bench/build-footprint.sh [SERVICE] [REV...]
# Each revision builds in its own worktree and target directory under a
# temp dir, one after another (run it on an otherwise idle machine).
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/../.."

service=${1:-portico-gateway}
shift || true
revs=("$@")
[ ${#revs[@]} -gt 0 ] || revs=(c451f24 HEAD)

work=$(mktemp -d)
cleanup() {
    for rev in "${revs[@]}"; do git worktree remove --force "$work/$rev" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

printf '%-10s %12s %14s %8s %8s %6s\n' revision build_secs binary_bytes crates units sqlx
for rev in "${revs[@]}"; do
    git worktree add --detach "$work/$rev" "$rev" >/dev/null 2>&1
    (
        cd "$work/$rev"
        start=$(date +%s.%N)
        CARGO_TARGET_DIR="$work/target-$rev" cargo build -p "$service" --release --locked >"$work/$rev.log" 2>&1
        end=$(date +%s.%N)
        crates=$(cargo tree -p "$service" -e normal --prefix none --locked 2>/dev/null | sort -u | wc -l)
        printf '%-10s %12.0f %14s %8s %8s %6s\n' "$rev" "$(echo "$end - $start" | bc)" \
            "$(stat -c %s "$work/target-$rev/release/$service")" "$crates" \
            "$(grep -c Compiling "$work/$rev.log")" \
            "$(grep -c 'Compiling sqlx\|Compiling libsqlite3' "$work/$rev.log" || true)"
    )
done
