// The Prometheus endpoint of `loco run` ([metrics] listen): GET /metrics answers the registry's text
// exposition (node/prom.h), refreshed (node/telemetry.h) at every scrape. Served by libmicrohttpd on
// its own thread; every other path is 404, every other method 405. Off unless [metrics] listen is set.
//
// Address rule: the endpoint has no authentication, and what it shows (loss, peer id prefixes, byte
// counts) is for the operator, so it binds to loopback unless a non-loopback address is written out:
//   "PORT" or "localhost:PORT" → 127.0.0.1:PORT;  "127.0.0.1:PORT", "[::1]:PORT" → loopback;
//   a numeric non-loopback address ("0.0.0.0:9100", "10.0.0.5:9100", "[::]:9100") → bound as written,
//   with a warning in the log. Host names other than localhost are refused: a name could resolve
//   to a public address without the config saying so. PORT 0 takes a free port (logged).
#ifndef LOCO_NODE_HTTP_METRICS_H
#define LOCO_NODE_HTTP_METRICS_H

#include <stddef.h>
#include <sys/socket.h>

#include "node/prom.h"

typedef struct http_metrics http_metrics_t;

// Parses a [metrics] listen value by the rule above into sa/salen; *loopback tells whether it is a
// loopback address. Returns 0, or -1 with the reason in err.
int http_metrics_parse_listen(const char *text, struct sockaddr_storage *sa, socklen_t *salen, int *loopback,
                              char *err, size_t errlen);

// Binds, listens and starts serving p (borrowed: it must outlive the server). NULL with the reason
// (a bad address, the port in use, ...).
http_metrics_t *http_metrics_start(const char *listen, prom_t *p, char *err, size_t errlen);
// "http://HOST:PORT/metrics" with the port actually bound.
const char *http_metrics_url(const http_metrics_t *h);
// Stops the server thread and closes the socket. Idempotent; nulls *self_p.
void http_metrics_stop(http_metrics_t **self_p);

#endif
