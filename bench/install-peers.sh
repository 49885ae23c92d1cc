#!/usr/bin/env bash
# Install the benchmark's peers from Debian (restic, borgbackup) where they are missing.
# A peer that cannot be installed is reported and the run goes on without its rows.
set -u
missing=()
command -v restic >/dev/null || missing+=(restic)
command -v borg >/dev/null || missing+=(borgbackup)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "bench: cannot install ${missing[*]} (needs root and apt-get); their rows are skipped" >&2
  exit 0
fi
apt-get update -qq >/dev/null || echo "bench: apt-get update failed; trying the install anyway" >&2
for package in "${missing[@]}"; do
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null \
    || echo "bench: could not install $package; its rows are skipped" >&2
done
