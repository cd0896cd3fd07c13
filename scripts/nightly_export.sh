#!/usr/bin/env bash
# Nightly export of the whole store to a dated, gzip-compressed JSON Lines file, keeping the
# last KEEP files. Meant for cron:
#
#   15 2 * * *  PATH=/path/to/venv/bin:/usr/bin:/bin AGENT_DATASTORE_URI=mongodb://... \
#               /path/to/scripts/nightly_export.sh /backups/agent-datastore 14
#
# Usage: nightly_export.sh DIRECTORY [KEEP]   (KEEP defaults to 7)
# Writes DIRECTORY/agent-datastore-YYYY-MM-DD.jsonl.gz with `agent-datastore export --gzip`,
# which replaces a file only once the export is complete, then keeps the newest KEEP
# archives and prints one summary line. Archives are rotated only after an export that
# holds items: when tonight's export holds none (an emptied store, or a URI naming the wrong
# database), every archive is kept, none is written, and the script exits 1. On any other
# failure it exits with agent-datastore's exit code, leaving the archives as they were.
# Restore with:  agent-datastore import FILE
set -euo pipefail

name=$(basename "$0")
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $name DIRECTORY [KEEP]" >&2
    exit 2
fi
directory=$1
keep=${2:-7}
case $keep in
    '' | *[!0-9]* | 0) echo "$name: KEEP must be a positive whole number" >&2; exit 2 ;;
esac
if [ -z "${AGENT_DATASTORE_URI:-}" ]; then
    echo "$name: set AGENT_DATASTORE_URI to the store to export" >&2
    exit 2
fi

mkdir -p "$directory"
target="$directory/agent-datastore-$(date -u +%Y-%m-%d).jsonl.gz"

# "exported N items to FILE": the count is the second word
status=0
summary=$(agent-datastore export --gzip --output "$target") || status=$?
if [ "$status" -ne 0 ]; then
    if [ -n "$summary" ]; then echo "$summary"; fi  # exit 4: what was exported, and skipped
    # 1: tonight's export held no items, and export kept today's earlier, non-empty archive
    if [ "$status" -eq 1 ]; then
        echo "$name: the store holds no items tonight; kept every archive, rotated none" >&2
    fi
    exit "$status"
fi
count=$(set -f; set -- $summary; echo "${2:-}")
if [ "$count" = 0 ]; then
    # export wrote an empty archive where there was none (or an empty one): an archive of
    # nothing must never push a good one out of the newest KEEP
    rm -f -- "$target"
    echo "$name: the store holds no items tonight; wrote no archive, kept every archive" >&2
    exit 1
fi

# keep the newest KEEP exports: the dated names sort by age, and a glob keeps spaces intact
archives=("$directory"/agent-datastore-*.jsonl.gz)
for ((i = 0; i < ${#archives[@]} - keep; i++)); do
    rm -f -- "${archives[i]}"
done
echo "$summary"
