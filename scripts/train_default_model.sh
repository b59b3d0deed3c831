#!/usr/bin/env bash
# Reproduce DiscVBR's shipped segmentation model (discvbr/data/models/cfcm-compact).
#
# 1. deterministic training data (phantom cohorts, semi-synthetic series on the three real
#    anatomies, the real T2-weighted volumes): scripts/segmentation_training_data.py
# 2. stage 1: a compact CFCM (width 0.125, blocks 1,1,2,1) trained on the synthetic phantom
#    cohorts only;
# 3. stage 2: three leave-one-real-subject-out folds fine-tuned from it on phantom +
#    semi-synthetic + real T2w slices. Only the real subjects (each with its semi-synthetic
#    copies: one group) are split into folds; phantom subjects always train (--cv-sources);
#    real slices are drawn 3 times and semi-synthetic twice per epoch (--oversample);
# 4. stage 3: each fold continued from its stage-2 weights on all five phantom cohorts plus the
#    semi-synthetic and real slices (same seed and groups, so the same folds);
# 5. stage 4: each fold continued from its stage-3 weights, same data, 10 epochs, with the zoom
#    augmentation widened from 0.9-1.1 to 0.75-1.33 (the real subjects' discs differ in size
#    by more than that; BENCHMARKS.md has the comparison).
# The three stage-4 folds form the shipped ensemble (logits averaged).
#
# Run from the repository root. CPU only; on two (shared) cores stage 1 took 32 min,
# stage 2 44 min, stage 3 about 40 min and stage 4 22 min.
set -euo pipefail
PY=${PYTHON:-python}
D=build/segmentation-data
M=build/models
export PYTHONPATH=${PYTHONPATH:-$PWD}
COMMON="--batch-size 8 --loss dice+ce --schedule cosine --crop 160,256 --width 0.125 --blocks 1,1,2,1 --seed 0 --threads 2"
PHANTOM="--data $D/phantom-2d-snr20/manifest.csv --data $D/phantom-2d-snr40/manifest.csv
  --data $D/phantom-2d-snr80/manifest.csv --data $D/phantom-3d-snr30/manifest.csv
  --data $D/phantom-3d-snr60/manifest.csv"

"$PY" scripts/segmentation_training_data.py "$D"

# stage 1
"$PY" -m discvbr train $PHANTOM --out $M/cfcm-compact-phantom --folds 1 --epochs 20 --lr 0.002 $COMMON \
  --name cfcm-compact-phantom

# stage 2
"$PY" -m discvbr train \
  --data $D/phantom-2d-snr20/manifest.csv --data $D/phantom-3d-snr30/manifest.csv \
  --data $D/semi.csv --data $D/real-t2w.csv \
  --out $M/cfcm-compact --folds 3 --cv-sources real-t2w,semi-synthetic \
  --oversample real-t2w=3,semi-synthetic=2 --init-from $M/cfcm-compact-phantom --epochs 16 --lr 0.001 $COMMON \
  --val-every 4 --name cfcm-compact

# stage 3
for k in 1 2 3; do
  "$PY" -m discvbr train $PHANTOM --data $D/semi.csv --data $D/real-t2w.csv \
    --out $M/cfcm-compact-b --folds 3 --fold $k --cv-sources real-t2w,semi-synthetic \
    --oversample real-t2w=4,semi-synthetic=2 --init-from $M/cfcm-compact/fold-$k --epochs 16 --lr 0.0005 $COMMON \
    --val-every 8 --name cfcm-compact
done

# stage 4 (the tables in the order the shipped run listed them: the order sets the batches)
for k in 1 2 3; do
  "$PY" -m discvbr train --data $D/phantom-2d-snr20/manifest.csv --data $D/phantom-2d-snr40/manifest.csv \
    --data $D/phantom-2d-snr80/manifest.csv --data $D/phantom-3d-snr60/manifest.csv \
    --data $D/phantom-3d-snr30/manifest.csv --data $D/semi.csv --data $D/real-t2w.csv \
    --out $M/cfcm-compact-c --folds 3 --fold $k --cv-sources real-t2w,semi-synthetic \
    --oversample real-t2w=4,semi-synthetic=2 --init-from $M/cfcm-compact-b/fold-$k --epochs 10 --lr 0.0003 $COMMON \
    --zoom 0.75,1.33 --val-every 10 --name cfcm-compact
done

# ship: the three folds and the ensemble file (no checkpoints)
rm -rf discvbr/data/models/cfcm-compact
for k in 1 2 3; do
  mkdir -p discvbr/data/models/cfcm-compact/fold-$k
  cp $M/cfcm-compact-c/fold-$k/model.json $M/cfcm-compact-c/fold-$k/weights.safetensors \
     discvbr/data/models/cfcm-compact/fold-$k/
done
cp $M/cfcm-compact-c/ensemble.json discvbr/data/models/cfcm-compact/
