#!/usr/bin/env bash
# Reproduce DiscVBR's shipped segmentation model (discvbr/data/models/cfcm-compact).
#
# 1. deterministic training data (phantom cohorts, semi-synthetic series on the three real
#    anatomies, the real T2-weighted volumes): scripts/segmentation_training_data.py
# 2. a compact CFCM pre-trained on the synthetic phantom cohorts only;
# 3. three leave-one-real-subject-out folds fine-tuned from it on phantom + semi-synthetic +
#    real T2w slices; the real subjects (with their semi-synthetic copies) are split into the
#    folds, the phantom subjects always train (--cv-sources). The three folds form the ensemble.
#
# Run from the repository root. CPU only: about 45 + 3 x 20 minutes on two shared cores.
set -euo pipefail
PY=${PYTHON:-python}
D=build/segmentation-data
M=build/models
export PYTHONPATH=${PYTHONPATH:-$PWD}

"$PY" scripts/segmentation_training_data.py "$D"

"$PY" -m discvbr train \
  --data $D/phantom-2d-snr20/manifest.csv --data $D/phantom-2d-snr40/manifest.csv \
  --data $D/phantom-2d-snr80/manifest.csv --data $D/phantom-3d-snr30/manifest.csv \
  --data $D/phantom-3d-snr60/manifest.csv \
  --out $M/cfcm-compact-phantom --folds 1 --epochs 20 --batch-size 8 --lr 0.002 --loss dice+ce \
  --schedule cosine --crop 160,256 --width 0.125 --blocks 1,1,2,1 --seed 0 --threads 2 \
  --name cfcm-compact-phantom

"$PY" -m discvbr train \
  --data $D/phantom-2d-snr20/manifest.csv --data $D/phantom-3d-snr30/manifest.csv \
  --data $D/semi.csv --data $D/real-t2w.csv \
  --out $M/cfcm-compact --folds 3 --cv-sources real-t2w,semi-synthetic \
  --init-from $M/cfcm-compact-phantom --epochs 8 --batch-size 8 --lr 0.001 --loss dice+ce \
  --schedule cosine --crop 160,256 --width 0.125 --blocks 1,1,2,1 --seed 0 --threads 2 --val-every 4 \
  --name cfcm-compact

rm -rf discvbr/data/models/cfcm-compact
mkdir -p discvbr/data/models/cfcm-compact
for k in 1 2 3; do
  mkdir -p discvbr/data/models/cfcm-compact/fold-$k
  cp $M/cfcm-compact/fold-$k/model.json $M/cfcm-compact/fold-$k/weights.safetensors \
     discvbr/data/models/cfcm-compact/fold-$k/
done
cp $M/cfcm-compact/ensemble.json discvbr/data/models/cfcm-compact/
