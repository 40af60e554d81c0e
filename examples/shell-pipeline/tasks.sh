#!/bin/sh
# Write the job's tasks, one per sample, as Batch task JSON (the objects one after another):
#   sh tasks.sh [SAMPLE ...] > tasks.json                 (default: s1 s2 s3)
# STORE is where the data is and the results go (default: this folder's remote/, through
# file://; on Azure, e.g. az://pipeline); the journal is $STORE/state unless TASKKIT_STATE says.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
store=${STORE:-file://$here/remote}
state=${TASKKIT_STATE:-$store/state}
[ "$#" -gt 0 ] || set -- s1 s2 s3

for sample in "$@"; do
    taskkit batch task-json --id "$sample" --state "$state" \
        -i "$store/ref/genes.tsv=ref/genes.tsv" \
        -i "$store/samples/$sample.tsv=reads.tsv" \
        -i "$store/code/=bin/" \
        -o "out/*=$store/results/$sample/" \
        --max-retries 3 --permanent-codes 3 --retryable-codes 75 \
        -- sh bin/sample.sh "$sample" "$store/results/$sample"
done
