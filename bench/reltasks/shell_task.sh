#!/bin/sh
# The command of a shell task of the reliability job (bench/rel_chaos.py), run by taskkit run:
#   sh shell_task.sh TASK
# with in/shared.bin staged, REL_ROOT (the trial's az:// prefix) and REL_LOG (the log outside the
# emulator's folder) set. Two steps, each recorded once, then the task's output out/result.txt.
# A step is logged "done" only after taskkit step returned 0, that is once it is recorded.
set -eu
task=$1
here=$(dirname "$0")

step() {
    name=$1
    shift
    taskkit step "$name" -o "steps/$name/*=$REL_ROOT/steps/$task/$name/" -- \
        python "$here/reljob.py" "$name" "$task" "$@"
    printf 'done %s %s\n' "$task" "$name" >> "$REL_LOG"
}

step digest in/shared.bin steps/digest/digest.bin
step iterate steps/digest/digest.bin steps/iterate/state.bin
python "$here/reljob.py" render "$task" out/result.txt steps/digest/digest.bin steps/iterate/state.bin
