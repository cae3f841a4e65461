// Checkpoint files: a versioned container of named sections, hashed, written atomically.
//
//   "LOCOCKPT" | u32 version | u32 section count
//   per section: u8 name length | name | u64 byte length | bytes
//   32-byte SHA-256 of everything before it
//
// All integers little-endian. Saves go to a temp file, fsync, rename, fsync(dir); in a checkpoint
// directory the manifest (`LATEST`: file name and hash) is rewritten the same way last, so a crash
// at any point leaves the previous checkpoint the newest complete one. Readers check the magic,
// version, every length against the file size before allocating, and the hash.
#ifndef LOCO_NODE_CHECKPOINT_H
#define LOCO_NODE_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#define CKPT_VERSION 1
#define CKPT_MAX_SECTIONS 64

typedef struct {
    char name[64];
    const uint8_t *data;   // writer: borrowed until save; reader: points into the loaded file
    size_t len;
} ckpt_section_t;

typedef struct {
    int n;
    ckpt_section_t sec[CKPT_MAX_SECTIONS];
    uint8_t *file;         // reader: the whole file
    size_t file_len;
    uint8_t digest[32];    // reader: the file's SHA-256 trailer
} ckpt_t;

// Writer: add borrowed sections, then save. Returns 0 or -1 (too many sections / name too long).
int ckpt_add(ckpt_t *c, const char *name, const void *data, size_t len);
// Writes c to path atomically. 0, or -1 with the reason (e.g. "No space left on device") in err;
// on failure the temp file is removed and any previous file at path is untouched.
int ckpt_save(const ckpt_t *c, const char *path, char *err, size_t errlen);

// Parses and verifies an in-memory image (takes no ownership). Pure; the fuzz target drives it.
int ckpt_parse(ckpt_t *c, const uint8_t *buf, size_t len, char *err, size_t errlen);
// Reads and verifies a file. c->file owns the bytes; release with ckpt_free.
int ckpt_load(ckpt_t *c, const char *path, char *err, size_t errlen);
void ckpt_free(ckpt_t *c);
// Section lookup: pointer and length, or NULL.
const uint8_t *ckpt_get(const ckpt_t *c, const char *name, size_t *len);

// Checkpoint directories. ckpt_dir_save writes DIR/ckpt_<step>.bin, then the manifest, then
// deletes the oldest beyond `keep`. ckpt_resolve turns PATH (a file or a directory) into the newest
// complete checkpoint file: the manifest's, or, if the manifest is missing or its file fails to
// verify, the newest file that verifies. Returns 0 or -1 with the reason.
int ckpt_dir_save(const ckpt_t *c, const char *dir, uint64_t step, int keep, char *path_out,
                  size_t path_len, char *err, size_t errlen);
int ckpt_resolve(const char *path, char *out, size_t outlen, char *err, size_t errlen);

// Little-endian helpers for section payloads.
void ckpt_put_u64(uint8_t *p, uint64_t v);
uint64_t ckpt_get_u64(const uint8_t *p);

#endif
