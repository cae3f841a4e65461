// The local control socket of `loco run`, and the client side that `loco status` uses.
//
// Where: [node] control = PATH, or by default CHECKPOINT_DIR/control/loco.sock ([train]
// checkpoint_dir, resolved like it: relative paths are relative to the node's working directory);
// "off" disables it. The node creates the socket's directory with mode 0700 when it is missing (the
// default directory is also tightened to 0700 if it is looser); a directory given in [node] control
// must already be owned by this user with no permissions for others, or the node refuses to start.
// The socket itself is made 0600. A socket path left behind by a node that did not stop cleanly is
// replaced; one that a running node answers on is an error (two nodes must not share a checkpoint
// directory).
//
// Who: the node reads the connecting process's uid with SO_PEERCRED and answers only its own user
// (and root); anyone else gets "error: refused ..." and the attempt is logged. The directory and
// file modes already keep other users out; the uid check holds even if they are loosened.
//
// Protocol: the client sends one line, "status" (the human summary) or "status json", and reads the
// answer until the node closes the connection. An answer starting with "error: " is a refusal.
// Requests are served one at a time on the control thread, each bounded by a 2 s timeout.
#ifndef LOCO_NODE_CONTROL_H
#define LOCO_NODE_CONTROL_H

#include <stddef.h>

#include "node/config.h"
#include "node/prom.h"

typedef struct control control_t;

// The socket path for cfg by the rule above into out ("" when off). Returns 0, or -1 when the path
// is too long for a UNIX socket (107 bytes) with the reason.
int control_path(const loco_config_t *cfg, char *out, size_t outlen, char *err, size_t errlen);

// Creates the directory and socket and starts the control thread answering from p (borrowed: it
// must outlive the server). is_default: the path is the default one (its directory may be
// tightened). NULL with the reason.
control_t *control_start(const char *path, int is_default, prom_t *p, char *err, size_t errlen);
// 1 when a running node answers at path (control_start would refuse it), else 0.
int control_in_use(const char *path);
// Stops the thread, removes the socket file (if it is still ours). Idempotent; nulls *self_p.
void control_stop(control_t **self_p);

// Client: sends request, reads the answer (malloc'd, NUL-terminated; the caller frees it) within
// timeout_ms. Returns 0 with *answer; -1 when no node answers at path (absent, stale, not a socket),
// -2 on any other failure (permission, timeout); the reason goes to err.
int control_query(const char *path, const char *request, int timeout_ms, char **answer, char *err, size_t errlen);

#endif
