#!/bin/sh
# One sample's task: what `taskkit run` runs in the task's working directory, where it has
# staged the reference (ref/genes.tsv, through the node cache), the sample (reads.tsv) and these
# scripts (bin/). Two steps, each published to the store and recorded done, so a retry on any
# node skips what is done; then the task's own outputs (out/), which taskkit run publishes.
#   sh bin/sample.sh SAMPLE RESULTS        RESULTS: where this sample's results go (a URL)
set -eu
sample=$1
results=$2

taskkit step align -o "work/hits.tsv=$results/steps/align/" -- \
    sh bin/align.sh ref/genes.tsv reads.tsv work/hits.tsv
taskkit step summarise -o "work/counts.tsv=$results/steps/summarise/" -- \
    sh bin/summarise.sh work/hits.tsv work/counts.tsv

# Cheap enough to do again on every attempt: the published outputs.
mkdir -p out
cp work/counts.tsv out/counts.tsv
awk -F '\t' -v sample="$sample" '
    $1 == "*" { unmapped = $2; next }
    { mapped += $2; if (++genes <= 3) top = top (top ? ", " : "") $1 " (" $2 ")" }
    END { printf "%s: %d of %d reads on %d genes, most on %s\n",
                 sample, mapped, mapped + unmapped, genes, top }
' work/counts.tsv > out/summary.txt
cat out/summary.txt
