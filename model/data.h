// Token shards (llm.c's format) and the batch streams drawn from them.
//
// A shard is a 256 × int32 little-endian header — magic 20240520, version 1, token count — then
// the tokens as uint16 little-endian. The header has no vocabulary; the model's vocab is checked
// against every token when a shard is opened. `loco data` writes byte-level shards from text.
#ifndef LOCO_MODEL_DATA_H
#define LOCO_MODEL_DATA_H

#include <stddef.h>
#include <stdint.h>

#define DATA_MAGIC 20240520
#define DATA_VERSION 1
#define DATA_HEADER_INTS 256
#define DATA_HEADER_BYTES (DATA_HEADER_INTS * 4)

typedef struct {
    char path[1024];
    size_t ntok;
    const uint16_t *tok;   // points into the mapping (little-endian hosts only; checked at build)
    void *map;
    size_t map_len;
} data_shard_t;

// Validates a shard header held in buf (len bytes) against the file size. Returns the token count,
// or -1 with a reason in err. Pure function: the fuzz target drives it.
int64_t data_header_parse(const uint8_t *buf, size_t len, uint64_t file_size, char *err, size_t errlen);

// Maps and validates a shard: header, size, and every token < vocab. NULL with the file name and
// the reason in err on failure.
data_shard_t *data_shard_open(const char *path, int vocab, char *err, size_t errlen);
void data_shard_destroy(data_shard_t **self_p);

// Writes tokens as a shard atomically (temp file, fsync, rename, fsync dir). 0 or -1 with err.
int data_shard_write(const char *path, const uint16_t *tokens, size_t n, char *err, size_t errlen);

// `loco data`: reads text from the inputs (files, or directories whose regular files without an
// extension or ending in .txt are taken in name order; symlinks are skipped), splits each input's
// last val_fraction (at a line boundary) into validation, and writes outdir/train_NNN.bin and
// outdir/val_000.bin as byte-level shards. Prints a summary line to stdout.
int data_prepare(const char *const *inputs, int ninputs, const char *outdir, double val_fraction,
                 char *err, size_t errlen);

// The shards of a data directory: training (*train*.bin) or validation (*val*.bin), name order.
typedef struct {
    int n;
    data_shard_t **shard;
    size_t total;          // tokens in all shards
} data_set_t;

data_set_t *data_set_open(const char *dir, int val, int vocab, char *err, size_t errlen);
void data_set_destroy(data_set_t **self_p);

// A seeded stream of random training windows. Each batch is B windows of T+1 consecutive tokens,
// the shard chosen in proportion to its size, the offset uniform. Two streams with different ids
// draw different windows; the state is one counter, saved in checkpoints.
typedef struct {
    const data_set_t *set;
    uint64_t seed, stream;
    uint64_t draws;        // windows drawn so far
} data_stream_t;

void data_stream_init(data_stream_t *s, const data_set_t *set, uint64_t seed, uint64_t stream);
// Fills inputs (B,T) and targets (B,T). Returns 0, or -1 if no shard holds T+1 tokens.
int data_stream_next(data_stream_t *s, int32_t *inputs, int32_t *targets, int B, int T);

// Evaluation windows: window i of shard 0 has inputs tok[i·T .. i·T+T−1], targets shifted by one.
// Number of complete windows available.
size_t data_eval_windows(const data_set_t *set, int T);
void data_eval_window(const data_set_t *set, size_t i, int32_t *inputs, int32_t *targets, int T);

#endif
