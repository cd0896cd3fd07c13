#!/usr/bin/env bash
# Nightly export of the whole store to a dated, compressed JSON Lines file, keeping the last
# KEEP files. Meant for cron:
#
#   15 2 * * *  PATH=/path/to/venv/bin:/usr/bin:/bin AGENT_DATASTORE_URI=mongodb://... \
#               /path/to/scripts/nightly_export.sh /backups/agent-datastore 14
#
# Usage: nightly_export.sh DIRECTORY [KEEP]   (KEEP defaults to 7)
# Writes DIRECTORY/agent-datastore-YYYY-MM-DD.jsonl.gz atomically (a partial file never takes
# the final name), prints one summary line, and exits with agent-datastore's exit code on
# failure. Restore with:  gunzip -c FILE | agent-datastore import -
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $(basename "$0") DIRECTORY [KEEP]" >&2
    exit 2
fi
directory=$1
keep=${2:-7}
case $keep in
    '' | *[!0-9]* | 0) echo "$(basename "$0"): KEEP must be a positive whole number" >&2; exit 2 ;;
esac
if [ -z "${AGENT_DATASTORE_URI:-}" ]; then
    echo "$(basename "$0"): set AGENT_DATASTORE_URI to the store to export" >&2
    exit 2
fi

mkdir -p "$directory"
target="$directory/agent-datastore-$(date -u +%Y-%m-%d).jsonl.gz"
partial="$target.partial"
trap 'rm -f "$partial"' EXIT

agent-datastore export --output - | gzip -c > "$partial"
mv "$partial" "$target"

# keep the newest KEEP exports: the dated names sort by age, and a glob keeps spaces intact
archives=("$directory"/agent-datastore-*.jsonl.gz)
for ((i = 0; i < ${#archives[@]} - keep; i++)); do
    rm -f -- "${archives[i]}"
done
count=$(gzip -dc "$target" | wc -l | tr -d ' ')
if [ "$count" = 1 ]; then noun=item; else noun=items; fi
echo "exported $count $noun to $target"
