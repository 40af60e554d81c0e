#!/bin/sh
# Step "summarise": reads per gene, most first ("*": reads of no gene).
#   sh bin/summarise.sh HITS OUT           OUT: GENE<TAB>READS
set -eu
hits=$1
out=$2
[ -z "${RUNS_LOG:-}" ] || echo "summarise $AZ_BATCH_TASK_ID attempt ${TASKKIT_ATTEMPT:-?}" >> "$RUNS_LOG"

mkdir -p "$(dirname "$out")"
cut -f 2 "$hits" | LC_ALL=C sort | uniq -c | LC_ALL=C sort -k 1,1nr -k 2,2 |
    awk -v OFS='\t' '{ print $2, $1 }' > "$out.partial"
mv "$out.partial" "$out"
