#!/bin/sh
# Step "align": the gene of each read, from the k-mer its bases start with.
#   sh bin/align.sh REF READS OUT          OUT: READ_ID<TAB>GENE ("*": no gene)
# Exit 3 (a permanent code of the task): a line of READS is not a read; no retry can help.
# Exit 75 (a retryable one): too little free disk here; a retry may run on another node.
set -eu
ref=$1
reads=$2
out=$3
# RUNS_LOG (unset on Batch): a line per real run of a step, to see what ran again.
[ -z "${RUNS_LOG:-}" ] || echo "align $AZ_BATCH_TASK_ID attempt ${TASKKIT_ATTEMPT:-?}" >> "$RUNS_LOG"

mkdir -p "$(dirname "$out")"
need=$(( $(wc -c < "$reads") / 1024 + 1024 ))
free=$(df -Pk "$(dirname "$out")" | awk 'NR == 2 { print $4 }')
if [ "$free" -lt "$need" ]; then
    echo "align: $free KiB free here, $need KiB needed" >&2
    exit 75
fi

LC_ALL=C awk -F '\t' -v OFS='\t' '
    NR == FNR { gene[$1] = $2; next }
    NF != 2 || $2 !~ /^[ACGT]+$/ {
        printf "align: %s line %d is not a read\n", FILENAME, FNR > "/dev/stderr"
        failed = 3
        exit
    }
    { k = substr($2, 1, 12); print $1, ((k in gene) ? gene[k] : "*") }
    END { if (failed) exit failed }
' "$ref" "$reads" > "$out.partial"
mv "$out.partial" "$out"
