#!/usr/bin/env bash
# The main job: `bash scripts/main.sh`. Trains the bench network on Fashion-MNIST for one epoch
# (CPU, online EM-PF, random BP), exports it to an empf-core model (bit-packed signs, folded
# BatchNorm, calibrated integer path), evaluates the exported file through empf-core (float and
# integer) next to the checkpoint's own accuracy, exports ONNX and runs the test set through ONNX
# Runtime (edge-infer), benchmarks edge-infer and empf-core, and runs the exported model on the
# QEMU Cortex-M3 firmware (mps2-an385, 4 MiB RAM) with every logit checked. Last, the microcontroller
# network (--arch mcu, 10 epochs) is trained, exported, run on the QEMU Cortex-M3 board with every
# logit checked against empf-core, and every firmware's flash/RAM is reported.
# Re-running continues the same run directory (a finished run is not retrained).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
RUN=${EMPF_RUN_DIR:-runs/main}
echo "[main] cargo build --workspace --release --features empf-edge-infer/ort"
cargo build --workspace --release --features empf-edge-infer/ort
bin=target/release/host-train
resume=()
[ -f "$RUN/checkpoint.safetensors" ] && resume=(--resume)
echo "[main] $bin train --epochs 1 --out $RUN ${resume[*]}"
"$bin" train --epochs 1 --out "$RUN" "${resume[@]}"
echo "[main] $bin export $RUN/checkpoint.safetensors -o $RUN/model.empf --calib 256"
"$bin" export "$RUN/checkpoint.safetensors" -o "$RUN/model.empf" --calib 256
echo "[main] $bin eval --model $RUN/model.empf --checkpoint $RUN/checkpoint.safetensors"
"$bin" eval --model "$RUN/model.empf" --checkpoint "$RUN/checkpoint.safetensors"
echo "[main] edge-infer to-onnx $RUN/model.empf -o $RUN/model.onnx"
target/release/edge-infer to-onnx "$RUN/model.empf" -o "$RUN/model.onnx"
echo "[main] edge-infer eval $RUN/model.empf (native float, native integer, ONNX Runtime)"
target/release/edge-infer eval "$RUN/model.empf"
echo "[main] edge-infer bench $RUN/model.empf"
target/release/edge-infer bench "$RUN/model.empf" --seconds 8
echo "[main] empf-core benchmark"
cargo run --release -q -p empf-core --features std --example bench
echo "[main] cargo xtask qemu --machine mps2-an385 --model $RUN/model.empf (bench model on a QEMU Cortex-M3, logits vs empf-core)"
cargo xtask qemu --machine mps2-an385 --model "$RUN/model.empf"
MCU=${EMPF_MCU_RUN_DIR:-$RUN-mcu}
resume=()
[ -f "$MCU/checkpoint.safetensors" ] && resume=(--resume)
echo "[main] $bin train --arch mcu --epochs 10 --out $MCU ${resume[*]}"
"$bin" train --arch mcu --epochs 10 --out "$MCU" "${resume[@]}"
echo "[main] $bin export $MCU/checkpoint.safetensors -o $MCU/model.empf --calib 256"
"$bin" export "$MCU/checkpoint.safetensors" -o "$MCU/model.empf" --calib 256
"$bin" eval --model "$MCU/model.empf" --checkpoint "$MCU/checkpoint.safetensors"
echo "[main] cargo xtask qemu --model $MCU/model.empf (lm3s6965 firmware in QEMU, logits vs empf-core)"
cargo xtask qemu --model "$MCU/model.empf"
echo "[main] cargo xtask size --model $MCU/model.empf"
cargo xtask size --model "$MCU/model.empf" --bench-model "$RUN/model.empf"
