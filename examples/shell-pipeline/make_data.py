"""Make the example's data in ``remote/``, a folder that stands for blob storage (the tasks read
it as ``file://.../remote/``, as they would read ``az://data/...`` on Batch):

- ``remote/ref/genes.tsv``: the shared reference, 120,000 k-mers of 12 bases and the gene each
  belongs to (``KMER<TAB>GENE``, 2.5 MiB): every task needs it.
- ``remote/samples/SAMPLE.tsv``: one sample's reads (``READ_ID<TAB>BASES``, 20,000 reads of 40
  bases each, most of them starting with a k-mer of the reference): one task each.
- ``remote/code/``: the task's scripts, copied from ``bin/``, as you would upload them.

The same bytes every time (fixed seeds). ``python make_data.py [SAMPLE ...]`` (default: s1 s2
s3); ``--bad SAMPLE`` writes a sample with a malformed read, which the pipeline refuses
(exit 3, permanent).
"""

from __future__ import annotations

import itertools
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REMOTE = HERE / "remote"
GENES = 400
KMERS_PER_GENE = 300
READS = 20_000
READ_LENGTH = 40
BASES = "ACGT"


#: A random byte to a base: each of the four takes 64 of the 256 values.
TO_BASE = bytes(BASES[b % 4].encode()[0] for b in range(256))


def kmer(rng: random.Random, length: int) -> str:
    return rng.randbytes(length).translate(TO_BASE).decode()


def reference() -> list[tuple[str, str]]:
    """``(kmer, gene)`` pairs, each k-mer once."""
    rng = random.Random(0)
    seen: set[str] = set()
    pairs = []
    for gene in range(GENES):
        while len(pairs) < (gene + 1) * KMERS_PER_GENE:
            k = kmer(rng, 12)
            if k not in seen:
                seen.add(k)
                pairs.append((k, f"gene-{gene:03d}"))
    return pairs


def sample(name: str, pairs: list[tuple[str, str]], *, bad: bool = False) -> str:
    """The reads of sample ``name``: 9 in 10 start with a k-mer of the reference (genes
    weighted so that each sample has its favourites), the rest are noise."""
    rng = random.Random(name)
    weights = list(itertools.accumulate(rng.random() ** 4 for _ in range(GENES)))
    lines = []
    for i in range(READS):
        if rng.random() < 0.9:
            gene = rng.choices(range(GENES), cum_weights=weights)[0]
            head = pairs[gene * KMERS_PER_GENE + rng.randrange(KMERS_PER_GENE)][0]
        else:
            head = kmer(rng, 12)
        lines.append(f"{name}-r{i:05d}\t{head}{kmer(rng, READ_LENGTH - 12)}")
    if bad:
        lines[READS // 2] = f"{name}-r{READS // 2:05d}\tACGTNNNN?"  # a read that is no read
    return "\n".join(lines) + "\n"


def put(name: str, text: str) -> None:
    """Write ``remote/NAME`` unless it holds ``text`` already: a blob written again is a new
    version, and a new version of an input is new work for every task that stages it."""
    path = REMOTE / name
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str]) -> int:
    bad = "--bad" in argv
    names = [a for a in argv if a != "--bad"] or ["s1", "s2", "s3"]
    pairs = reference()
    put("ref/genes.tsv", "".join(f"{k}\t{g}\n" for k, g in pairs))
    for name in names:
        put(f"samples/{name}.tsv", sample(name, pairs, bad=bad))
    for script in sorted((HERE / "bin").glob("*.sh")):
        put(f"code/{script.name}", script.read_text())
    print(f"reference, samples {' '.join(names)} and scripts in {REMOTE.as_uri()}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
