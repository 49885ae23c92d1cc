#!/usr/bin/env bash
# `make demo`: a filesystem repository under ./demo, used the way a user would.
# Usage: docs/demo.sh PATH-TO-CORSO. Safe to run again: init on the same repository with the
# same passphrase says it already exists.
set -euo pipefail
CORSO=${1:?usage: docs/demo.sh PATH-TO-CORSO}
DEMO=$(pwd)/demo

export CORSO_CONFIG_DIR="$DEMO/config"          # keep the demo's corso.toml out of ~/.config
export CORSO_CACHE_DIR="$DEMO/cache"            # and its cache out of ~/.cache
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

# A small sample tree: text, a larger compressible file, a symlink, an empty dir.
SAMPLE="$DEMO/sample"
if [ ! -d "$SAMPLE" ]; then
    mkdir -p "$SAMPLE/docs" "$SAMPLE/empty"
    for i in $(seq 1 20); do echo "note $i: corso keeps encrypted, deduplicated backups" \
        > "$SAMPLE/docs/note-$i.txt"; done
    seq 1 200000 > "$SAMPLE/numbers.txt"
    ln -s docs/note-1.txt "$SAMPLE/latest-note"
    # A file changed within a second of being read is read again next time (a same-size rewrite
    # in the same clock tick would otherwise go unseen): let the new sample settle first.
    sleep 2
fi
step "Back up the sample tree (files new/changed/unchanged, bytes read and added)" \
    backup create files --path "$SAMPLE" --tag demo=yes
step "Back up again: unchanged files are not read, nothing new is stored" \
    backup create files --path "$SAMPLE" --tag demo=yes
step "List the backups" backup list files
BACKUP=$("$CORSO" backup list files --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
step "What the latest backup holds under docs/" \
    backup details files --backup "$BACKUP" --path 'sample/docs/note-1*'
step "Restore it into $DEMO/restored (replace what an earlier demo restored)" \
    restore files --backup "$BACKUP" --destination "$DEMO/restored" --collisions replace
printf '\n== The restored tree equals the sample, byte for byte\n$ diff -r %s %s\n' \
    "$SAMPLE" "$DEMO/restored/sample"
diff -r "$SAMPLE" "$DEMO/restored/sample" && echo "identical"

printf '\nDone: repository in %s, config in %s. Remove %s to start over.\n' \
    "$DEMO/repository" "$CORSO_CONFIG_DIR" "$DEMO"
