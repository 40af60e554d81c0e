#!/bin/sh
# The training task on an emulated pool of two Spot nodes, preempted in the middle of its run:
# the retry lands on a fresh node, restores the last checkpoint taskkit synced, and finishes.
# Then the job's page, and what the ledger says was computed again.
#
#   ./run.sh                     1000 steps; the node is preempted 3.5 s after the task starts
#   STEPS=600 STRIKE=2.5 ./run.sh
#
# Each run starts afresh: it removes what the last one made (see .gitignore).
set -eu
cd "$(dirname "$0")"
STEPS=${STEPS:-1000}
STRIKE=${STRIKE:-3.5}
show() { printf '$ %s\n' "$*" >&2; "$@"; }

# This folder stands for blob storage: the code is read from it, the result published to it.
HERE=file://$PWD
rm -rf .taskkit-local results steps.log tasks-local.json report.html
export TRAIN_LEDGER="$PWD/steps.log"

# tasks.json with this folder's URLs: the state in the emulator's folder, the code and the
# result here, a sync of the checkpoint every second (the whole run takes seconds).
show taskkit batch task-json --id train --state "$HERE/.taskkit-local/state" --max-retries 3 \
    --checkpoint-dir checkpoint --checkpoint-interval 1s \
    -i "$HERE/train.py=train.py" -o "result.json=$HERE/results/" \
    -- python3 train.py --steps "$STEPS" > tasks-local.json

# With --seed 52 the task's first launch draws 0.501: the strike lands at 0.501 x within
# seconds after it starts; limit=1 spares the retry.
WITHIN=$(python3 -c "print(round($STRIKE / 0.501, 3))")
show taskkit local run tasks-local.json --nodes 2 \
    --chaos "preempt=1,within=$WITHIN,limit=1" --seed 52

show taskkit report --state "$HERE/.taskkit-local/state" --job-id local -o report.html
show python3 train.py --account steps.log
