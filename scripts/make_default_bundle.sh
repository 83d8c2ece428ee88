#!/usr/bin/env bash
# Rebuild the bundled default of `caeav infer` (caeav/assets/default/): a `tiny` AVE model trained on the synthetic
# AVE dataset and exported to ONNX, plus one synthetic test clip as the sample. Deterministic for the seeds below;
# about a minute on a 2-core CPU. Usage: scripts/make_default_bundle.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
caeav=${CAEAV:-.venv/bin/caeav}
work=${1:-$(mktemp -d /tmp/caeav-default.XXXXXX)}
# Narrower than plain `tiny` so the bundle stays small (about 3 M parameters); the paper's MLP AVE head.
overrides=(visual.embed_dim=16 visual.num_heads=[1,1,2,4] audio.embed_dim=16 audio.num_heads=[1,1,2,4]
           audio.num_classes=8 task.head.kind=mlp task.train.lr=3e-3 task.train.step_size=0
           task.train.accum_steps=1 task.train.epochs=12 task.train.seed=0)

rm -rf "$work/data" "$work/run" "$work/bundle"
"$caeav" data synth ave --out "$work/data" --clips 8 --seed 0 --media both
"$caeav" train ave --config tiny --data-root "$work/data" --out "$work/run" -q "${overrides[@]}"
"$caeav" eval ave --checkpoint "$work/run/best" --data-root "$work/data" --split test
"$caeav" export --checkpoint "$work/run/best" --task ave --engine onnx --precision fp32 --batch 1:2:4 \
    --out "$work/bundle"

dest=caeav/assets/default
rm -rf "$dest.new" && mkdir -p "$dest.new"
cp -r "$work/bundle" "$dest.new/bundle"
# the trained weights travel inside the bundle (checkpoint/, checksummed in the manifest): `caeav export` copies them
# the sample: the first clip of the synthetic test split (never seen in training)
test_id=$(head -1 "$work/data/testSet.txt" | cut -d'&' -f2)
sample=$(find "$work/data" -name "$test_id.mp4" | head -1)
[ -n "$sample" ] || { echo "no video for test clip $test_id"; exit 1; }
cp "$sample" "$dest.new/sample.mp4"
rm -rf "$dest" && mv "$dest.new" "$dest"
du -sh "$dest"/*
"$caeav" infer
