// Reading GPT-2 weights from safetensors (what `loco export` writes, or GPT-2 converted
// elsewhere): [train] init = FILE (or --init FILE) starts every peer of a run from these weights.
//
// The file is u64 LE header length, a JSON header {"name": {"dtype", "shape", "data_offsets"}, ...},
// then the data. Every tensor of the model config must be present under its Hugging Face GPT-2
// name (with or without a "transformer." prefix), with the expected shape (Conv1D weights stored
// (in, out), transposed back here) and dtype F32, F16 or BF16 (converted to fp32); extra tensors
// (e.g. "h.0.attn.bias" masks, "lm_head.weight" tied to wte) are ignored. Every length and offset is
// checked against the file size before anything is read.
#ifndef LOCO_NODE_SAFETENSORS_H
#define LOCO_NODE_SAFETENSORS_H

#include "model/gpt.h"

// Fills params (gpt_num_params(cfg) floats) from path. Returns 0, or -1 with the reason (naming
// the tensor and what was wrong) in err.
int safetensors_load_gpt(const char *path, const gpt_config_t *cfg, float *params, char *err, size_t errlen);

// Writes params as fp32 safetensors with those names and layouts (loco export), atomically (temp
// file, fsync, rename). Returns 0, or -1 with the reason.
int safetensors_save_gpt(const char *path, const gpt_config_t *cfg, const float *params, char *err, size_t errlen);

#endif
