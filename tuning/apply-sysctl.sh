#!/usr/bin/env bash
# Apply seckill's sysctl settings now, showing what changes.
#
# Usage: tuning/apply-sysctl.sh [--dry-run] [FILE]
#   FILE       sysctl file to read (default: sysctl.d/90-seckill.conf next to this script)
#   --dry-run  print "key: old -> new" for every key and change nothing (no root needed)
#
# For every `key = value` line it prints `key: old -> new`, then (unless --dry-run) runs
# `sysctl -w key=value`. Keys this kernel does not have are reported and skipped. Without
# --dry-run it must run as root and exits 1 otherwise, before touching anything. It exits 1 if any
# write failed (e.g. a read-only /proc/sys in a container) and 0 otherwise.
#
# This changes the running kernel only. To keep the settings across reboots, install the file:
#   cp tuning/sysctl.d/90-seckill.conf /etc/sysctl.d/ && sysctl --system
set -u

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; }

dry_run=0
file=""
for arg in "$@"; do
  case "$arg" in
    --dry-run|-n) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "apply-sysctl: unknown option: $arg" >&2; usage >&2; exit 2 ;;
    *)
      if [ -n "$file" ]; then echo "apply-sysctl: only one FILE may be given" >&2; exit 2; fi
      file=$arg ;;
  esac
done
if [ -z "$file" ]; then
  file="$(cd "$(dirname "$0")" && pwd)/sysctl.d/90-seckill.conf"
fi
if [ ! -r "$file" ]; then
  echo "apply-sysctl: cannot read $file" >&2
  exit 2
fi
if [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "apply-sysctl: changing kernel settings needs root; rerun with sudo, or use --dry-run to only preview" >&2
  exit 1
fi
if ! command -v sysctl >/dev/null 2>&1; then
  echo "apply-sysctl: sysctl not found (install procps)" >&2
  exit 2
fi

# Collapse runs of blanks/tabs to one space, trim the ends: sysctl prints multi-value keys with
# tabs, the file uses spaces.
normalise() { printf '%s\n' "$*" | tr -s ' \t' '  ' | sed 's/^ //; s/ $//'; }

[ "$dry_run" -eq 1 ] && echo "# dry run: nothing is changed ($file)"
changed=0 unchanged=0 skipped=0 failed=0
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  line=${line%%#*}                      # strip comments
  line=$(normalise "$line")
  [ -z "$line" ] && continue
  case "$line" in
    *=*) ;;
    *) echo "apply-sysctl: $file:$lineno: not a 'key = value' line, ignored: $line" >&2; continue ;;
  esac
  key=$(normalise "${line%%=*}")
  value=$(normalise "${line#*=}")
  key=${key#-}                          # sysctl.d's "-key = value" (ignore errors) form
  if [ ! -e "/proc/sys/$(printf '%s' "$key" | tr . /)" ]; then
    echo "$key: skipped (this kernel has no such key) -> $value"
    skipped=$((skipped + 1))
    continue
  fi
  if ! old=$(sysctl -n "$key" 2>/dev/null); then
    old="(unreadable)"
  fi
  old=$(normalise "$old")
  if [ "$old" = "$value" ]; then
    echo "$key: $old -> $value (unchanged)"
    unchanged=$((unchanged + 1))
    continue
  fi
  if [ "$dry_run" -eq 1 ]; then
    echo "$key: $old -> $value"
    changed=$((changed + 1))
    continue
  fi
  if err=$(sysctl -q -w "$key=$value" 2>&1 >/dev/null); then
    echo "$key: $old -> $value"
    changed=$((changed + 1))
  else
    echo "$key: $old -> $value FAILED: ${err:-sysctl -w failed}"
    failed=$((failed + 1))
  fi
done < "$file"

if [ "$dry_run" -eq 1 ]; then
  echo "# would change $changed, unchanged $unchanged, skipped $skipped (not in this kernel)"
else
  echo "# changed $changed, unchanged $unchanged, skipped $skipped (not in this kernel), failed $failed"
fi
[ "$failed" -eq 0 ]
