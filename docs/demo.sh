#!/usr/bin/env bash
# `make demo`: a filesystem repository under ./demo, used the way a user would.
# Usage: docs/demo.sh PATH-TO-CORSO. Safe to run again: init on the same repository with the
# same passphrase says it already exists.
set -euo pipefail
CORSO=${1:?usage: docs/demo.sh PATH-TO-CORSO}
DEMO=$(pwd)/demo

export CORSO_CONFIG_DIR="$DEMO/config"          # keep the demo's corso.toml out of ~/.config
export CORSO_PASSPHRASE="demo passphrase, not for real backups"
mkdir -p "$DEMO"

step() { printf '\n== %s\n$ corso %s\n' "$1" "${*:2}"; "$CORSO" "${@:2}"; }

step "Create an encrypted repository in $DEMO/repository (passphrase from \$CORSO_PASSPHRASE)" \
    repo init filesystem --path "$DEMO/repository"
printf '\n== The connection is remembered in $CORSO_CONFIG_DIR/corso.toml (no secrets in it)\n'
printf '$ cat %s\n' "$CORSO_CONFIG_DIR/corso.toml"
cat "$CORSO_CONFIG_DIR/corso.toml"
step "Installed plugins: backends and sources, each registered through an entry point" plugins
step "Later commands need no storage flags" repo status
step "The same as JSON, with the storage requests this command cost" repo status --json

printf '\nDone: repository in %s, config in %s. Remove %s to start over.\n' \
    "$DEMO/repository" "$CORSO_CONFIG_DIR" "$DEMO"
