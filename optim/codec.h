// Pseudo-gradient codecs with the fixed names and definitions of ALGORITHMS.md ("Compressed
// exchange"): fp32, bf16, int8 (6σ/256 bins + a 256-entry table of bin means), int4 (blocks of 64,
// fp16 absmax scale, levels −7…7). Pure functions on float buffers; no allocation, no state.
//
// A codec encodes one *chunk* (a range of a flat float buffer) on its own: int8's σ and table are
// per chunk, as INTELLECT-1 does it. The transfer layer (net/xfer.h) splits a tensor into chunks of
// codec_chunk_elems() values, so chunk boundaries are part of the encoding: error feedback must use
// the same split (net_xfer does it for you).
//
// Encoded layouts (all little-endian, no padding):
//   fp32  n × f32
//   bf16  n × u16 (the top half of the f32, rounded to nearest even; saturates instead of +-inf)
//   int8  256 × f32 table, then n × u8 indices          (1024 + n bytes)
//   int4  ceil(n/64) × u16 fp16 scales, then ceil(n/2) bytes of 4-bit levels (low nibble = even
//         element), level = nibble − 8 (the encoder writes 1…15, i.e. −7…7)
// Decoders reject any encoding whose decoded values could be NaN or ±Inf (checking the table or the
// scales, not every value), so a hostile sender cannot poison an average.
#ifndef LOCO_OPTIM_CODEC_H
#define LOCO_OPTIM_CODEC_H

#include <stddef.h>
#include <stdint.h>

typedef enum { CODEC_FP32 = 0, CODEC_BF16 = 1, CODEC_INT8 = 2, CODEC_INT4 = 3 } codec_id_t;
#define CODEC_COUNT 4
#define CODEC_INT4_BLOCK 64
#define CODEC_INT8_TABLE 256

// "fp32", "bf16", "int8", "int4"; NULL for an unknown id.
const char *codec_name(int id);
// The id of a name, or -1.
int codec_from_name(const char *name);
// 1 for the lossy codecs (everything but fp32).
int codec_is_lossy(int id);

// Encoded size of n values, or 0 for an unknown id. n ≤ 2^56 (callers check limits first).
size_t codec_encoded_size(int id, size_t n);
// The number of values per chunk so that one encoded chunk is at most chunk_bytes (at least 64
// values; a multiple of 64 so int4 blocks never straddle chunks).
size_t codec_chunk_elems(int id, size_t chunk_bytes);

// Encodes n values of x into out (codec_encoded_size bytes). If deq is not NULL, also writes the
// decoded values there (what the receiver will see), which error feedback needs. Returns 0, or -1
// if x holds a NaN or ±Inf or the id is unknown (out is then unspecified).
int codec_encode(int id, const float *x, size_t n, uint8_t *out, float *deq);

// Decodes an encoding of n values. len must equal codec_encoded_size(id, n). Returns 0, or -1 with
// the reason in err (wrong length, unknown codec, NaN/Inf in the decoded values).
int codec_decode(int id, const uint8_t *in, size_t len, size_t n, float *out, char *err, size_t errlen);

// Error feedback (ALGORITHMS.md): e ← e + Δ; out = Q(e); e ← e − deQ(out). residual (n floats)
// is the caller's per-sender, per-quantity state, zero at the start. scratch holds n floats.
// For fp32 the residual stays exactly zero. Returns 0, or -1 (residual untouched) if Δ or e + Δ
// holds a NaN/Inf or the id is unknown.
int codec_ef_encode(int id, float *residual, const float *delta, size_t n, uint8_t *out, float *scratch);

// IEEE half precision conversions (round to nearest even), exposed for tests.
uint16_t codec_f32_to_f16(float f);
float codec_f16_to_f32(uint16_t h);

#endif
