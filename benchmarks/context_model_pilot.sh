#!/usr/bin/env bash
# The context-model pilot (issue 30): codec-only (stage 1) fine-tunes of the shipped sodec-small's codec, today's
# mean-scale hyperprior against the checkerboard context model (--entropy_model checkerboard: sodec-small's E, H_a,
# P, entropy models and D_a kept, g_cm and g_ep new, g_ep's last layer at zero so that it starts at the shipped rate),
# same data, seed, λ and minutes of one core each, one after another; then the scoring with real bytes on BSDS500
# test photos outside the held-out 20 (benchmarks/context_model_pilot.py).
#
#   DATA=bsds500 OUT=runs/context-pilot MINUTES=30 \
#       bash benchmarks/context_model_pilot.sh train hyperprior checkerboard
#   DATA=... OUT=... bash benchmarks/context_model_pilot.sh score            # BD-rate over the levels, per λ
#   DATA=... OUT=... LAMBDAS="0.015 0.03 0.06" bash benchmarks/context_model_pilot.sh train hyperprior checkerboard
#   DATA=... OUT=... LAMBDAS="0.015 0.03 0.06" bash benchmarks/context_model_pilot.sh score-lambdas  # over the 3 λ
#
# Each run: BSDS500 train+val, RESOLUTION² random crops (128 or 256) × BATCH, each image at its own Δ drawn from
# [0.42, 3.4] with its rate weighed by λ·Δ² (the recipe of sodec-small's codec across the levels), lr 1e-4 decayed
# by the clock (cosine over MINUTES), one thread on core CORE. The released pipeline of a run is $OUT/NAME-lλ.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATA:?DATA: the BSDS500 folder (train/, val/, test/)}" "${OUT:?OUT: where the runs go}"
: "${MINUTES:=30}" "${LAMBDAS:=0.03}" "${RESOLUTION:=128}" "${BATCH:=8}" "${SEED:=1}" "${CORE:=0}"
: "${BASE_MODEL:=pretrained/sodec-small}" "${COUNT:=20}" "${LEVELS:=1,3,5,7,9}"
mkdir -p "$OUT"
COMMON="--pretrained_model_name_or_path $BASE_MODEL --train_data_dir $DATA/train $DATA/val --resolution $RESOLUTION
  --train_batch_size $BATCH --stage 1 --unet_training full --quantization_step_range 0.42 3.4
  --lambda_step_exponent 2 --learning_rate 1e-4 --lr_warmup_steps 100 --lr_scheduler cosine
  --max_train_steps 1000000 --max_train_minutes $MINUTES --checkpointing_steps 1000 --checkpoints_total_limit 1
  --report_to jsonl --seed $SEED"
run() { taskset -c "$CORE" env OMP_NUM_THREADS=1 "$@"; }

command="${1:?train NAME... | score | score-lambdas}"
shift
case "$command" in
  train)
    for lambda in $LAMBDAS; do
      for name in "$@"; do
        case "$name" in
          hyperprior) extra="" ;;                                    # the control: today's entropy model, trained as long
          checkerboard) extra="--entropy_model checkerboard" ;;      # g_cm 5×5 → 128, g_ep 384 → 128 → 128 → 256
          *) echo "unknown pilot $name (hyperprior, checkerboard)" >&2; exit 2 ;;
        esac
        # shellcheck disable=SC2086
        run python training/train_sodec.py $COMMON $extra --lambda_rate_start "$lambda" \
          --output_dir "$OUT/$name-l$lambda" > "$OUT/$name-l$lambda.log" 2>&1
      done
    done ;;
  score)  # the levels of each run; BD-rate (PSNR) against the hyperprior run (the shipped model as a third curve)
    for lambda in $LAMBDAS; do
      run python benchmarks/context_model_pilot.py --bsds-test "$DATA/test" --count "$COUNT" --levels "$LEVELS" \
        --curve "hyperprior=$OUT/hyperprior-l$lambda" --curve "checkerboard=$OUT/checkerboard-l$lambda" \
        --curve "shipped=$BASE_MODEL" --out "$OUT/score-l$lambda.json"
    done ;;
  score-lambdas)  # the default level of the runs of every λ pooled: BD-rate over the λ
    hyper="" checker=""
    for lambda in $LAMBDAS; do hyper="$hyper,$OUT/hyperprior-l$lambda" checker="$checker,$OUT/checkerboard-l$lambda"; done
    run python benchmarks/context_model_pilot.py --bsds-test "$DATA/test" --count "$COUNT" --levels 5 \
      --curve "hyperprior=${hyper#,}" --curve "checkerboard=${checker#,}" --out "$OUT/score-lambdas.json" ;;
  *) echo "unknown command $command (train, score, score-lambdas)" >&2; exit 2 ;;
esac
