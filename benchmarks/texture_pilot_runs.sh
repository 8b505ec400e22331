#!/usr/bin/env bash
# The texture pilot (issue 29): short stage-2/stage-4 fine-tunes of the shipped sodec-small's diffusion path,
# codec and D_a frozen, one after another on core 0 (one thread), each for the same minutes. Scored afterwards
# by benchmarks/texture_pilot.py on BSDS500 test photos outside the held-out 20.
#   DATA="bsds500/train bsds500/val" OUT=/root/ckpt/tp MINUTES=13 bash benchmarks/texture_pilot_runs.sh NAME...
# RESUME=1 continues a stopped run from its last checkpoint (the same MINUTES: the clock and lr go on from there).
# CORE=1 runs on core 1 (default 0).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATA:?}" "${OUT:?}" "${MINUTES:=13}" "${BASE_MODEL:=pretrained/sodec-small}" "${RESUME:=}"
COMMON="--pretrained_model_name_or_path $BASE_MODEL --train_data_dir $DATA --resolution 128 --train_batch_size 8
  --unet_training full --max_train_steps 1000000 --lr_scheduler cosine --report_to jsonl --seed 3
  --quantization_step_range 0.42 3.4 --learning_rate 1e-4 --lr_warmup_steps 20 --train_image_encoder
  --train_vae_decoder --freeze_fidelity_decoder --mixed_precision no --colour_weight 20 --latent_weight 0.25
  --colour_correction_block_size 8 --checkpointing_steps 100 --checkpoints_total_limit 1 --max_train_minutes $MINUTES
  ${RESUME:+--resume_from_checkpoint latest}"
GAN="--stage 4 --freeze_codec --adversarial_weight 0.01 --discriminator_channels 32,64,128,256"
for name in "$@"; do
  case "$name" in
    control) extra="--stage 2 --mse_weight 5 --dists_weight 0.25" ;;                     # today's recipe, continued
    gan) extra="$GAN --mse_weight 5 --dists_weight 0.25" ;;                                # + conditional GAN
    gan-nodists) extra="$GAN --mse_weight 5" ;;                                            # GAN instead of DISTS
    texture) extra="--stage 2 --mse_weight 5 --dists_weight 0.25 --texture_weight 0.003" ;; # + window-energy L1
    gan-texture) extra="$GAN --mse_weight 5 --texture_weight 0.01 --adversarial_weight 0.02" ;; # no DISTS: energy L1 + GAN
    gan-asym) extra="$GAN --mse_weight 5 --texture_weight 0.002 --texture_excess_factor 8" ;; # one-sided-heavy energy loss
    asym-dists) extra="$GAN --mse_weight 5 --dists_weight 0.05 --texture_weight 0.005 --texture_excess_factor 8" ;; # + a little DISTS
    asym-dists2) extra="$GAN --mse_weight 5 --dists_weight 0.1 --texture_weight 0.008 --texture_excess_factor 8" ;; # more of both
    asym-gan3) extra="$GAN --mse_weight 5 --dists_weight 0.1 --texture_weight 0.008 --texture_excess_factor 8 --adversarial_weight 0.03" ;;
    dists25) extra="$GAN --mse_weight 5 --dists_weight 0.25 --texture_weight 0.02 --texture_excess_factor 8 --adversarial_weight 0.03" ;; # today's DISTS weight, energy loss in proportion
    asym-q4) extra="$GAN --mse_weight 5 --dists_weight 0.1 --texture_weight 0.008 --texture_excess_factor 4 --adversarial_weight 0.03" ;; # a milder one-sided factor
    asym-flat) extra="$GAN --mse_weight 5 --dists_weight 0.1 --texture_weight 0.008 --texture_excess_factor 16 --texture_flat_energy 8 --adversarial_weight 0.03" ;; # factor 16 on flat regions, 1 on textured ones
    asym-flat2) extra="$GAN --mse_weight 5 --dists_weight 0.1 --texture_weight 0.008 --texture_excess_factor 32 --texture_flat_energy 8 --adversarial_weight 0.03" ;; # asym-flat carried on, a larger flat factor
    asym-flat3) extra="$GAN --mse_weight 5 --dists_weight 0.1 --texture_weight 0.008 --texture_excess_factor 32 --texture_flat_energy 6 --adversarial_weight 0.03" ;; # factor 32, falling faster with E (1.3 at the textured windows' E ≈ 28)
    asym-flat4) extra="$GAN --mse_weight 5 --dists_weight 0.1 --texture_weight 0.008 --texture_excess_factor 24 --texture_flat_energy 8 --adversarial_weight 0.03" ;; # between asym-flat and asym-flat2
    asym-flat3b) extra="$GAN --mse_weight 5 --dists_weight 0.1 --texture_weight 0.016 --texture_excess_factor 32 --texture_flat_energy 6 --adversarial_weight 0.03" ;; # asym-flat3 carried on with twice the energy weight (texture against MSE's blur)
    realism) extra="$GAN --mse_weight 5 --dists_weight 0.1 --texture_weight 0.008 --texture_excess_factor 32 --texture_flat_energy 6 --adversarial_weight 0.03 --realism_control" ;; # asym-flat3 with the realism control (issue 29 item 4): each image's perceptual and GAN terms weighed by its realism
    asym-flat3-chroma) extra="$GAN --mse_weight 5 --dists_weight 0.1 --texture_weight 0.008 --texture_excess_factor 32 --texture_flat_energy 6 --adversarial_weight 0.03 --chroma_weight 0.05" ;; # asym-flat3 and a charge on colour detail the photo lacks (coloured speckle)
    asym-flat3-grain) extra="$GAN --mse_weight 5 --dists_weight 0.1 --texture_weight 0.008 --texture_excess_factor 32 --texture_flat_energy 6 --adversarial_weight 0.03 --chroma_weight 0.05 --grain_weight 20" ;; # asym-flat3-chroma and a charge on any one frequency painted stronger than the photo has it (hatching)
    grain-texture2) extra="$GAN --mse_weight 5 --dists_weight 0.1 --texture_weight 0.016 --texture_excess_factor 32 --texture_flat_energy 6 --adversarial_weight 0.03 --chroma_weight 0.05 --grain_weight 20" ;; # sodec-small 7's recipe with twice the energy weight: real texture back where the photo has it, the grid kept off by the grain term
    grain-dists25) extra="$GAN --mse_weight 5 --dists_weight 0.25 --texture_weight 0.008 --texture_excess_factor 32 --texture_flat_energy 6 --adversarial_weight 0.03 --chroma_weight 0.05 --grain_weight 20" ;; # sodec-small 7's recipe with the DISTS weight of sodec-small 5
    *) echo "unknown pilot $name" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  taskset -c "${CORE:-0}" env OMP_NUM_THREADS=1 python training/train_sodec.py $COMMON $extra --output_dir "$OUT/$name" \
    >> "$OUT/$name.log" 2>&1
done
