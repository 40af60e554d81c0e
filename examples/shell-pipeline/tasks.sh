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
# On Batch the tasks reach storage with the pool's managed identity: these name the account
# and the identity (no key, no token), when set. Neither holds a space.
settings=
for name in AZURE_STORAGE_ACCOUNT_NAME AZURE_CLIENT_ID; do
    value=$(printenv "$name" || true)
    [ -z "$value" ] || settings="$settings --env $name=$value"
done

for sample in "$@"; do
    taskkit batch task-json --id "$sample" --state "$state" \
        -i "$store/ref/genes.tsv=ref/genes.tsv" \
        -i "$store/samples/$sample.tsv=reads.tsv" \
        -i "$store/code/=bin/" \
        -o "out/*=$store/results/$sample/" \
        --max-retries 3 --permanent-codes 3 --retryable-codes 75 $settings \
        -- sh bin/sample.sh "$sample" "$store/results/$sample"
done
