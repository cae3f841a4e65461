#include "node/http_metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node/log.h"
#include "node/telemetry.h"

struct http_metrics {
    struct MHD_Daemon *d;
    prom_t *prom;
    char url[300];
};

int http_metrics_parse_listen(const char *text, struct sockaddr_storage *sa, socklen_t *salen, int *loopback,
                              char *err, size_t errlen) {
    char host[128] = "";
    const char *port_s = NULL;
    memset(sa, 0, sizeof *sa);
    if (!text || !*text) {
        snprintf(err, errlen, "empty address");
        return -1;
    }
    if (text[0] == '[') { // [v6]:port
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':' || (size_t)(close - text - 1) >= sizeof host) {
            snprintf(err, errlen, "'%s': expected [IPv6]:PORT", text);
            return -1;
        }
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        port_s = close + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (colon) {
            if ((size_t)(colon - text) >= sizeof host) {
                snprintf(err, errlen, "'%s': host part too long", text);
                return -1;
            }
            memcpy(host, text, (size_t)(colon - text));
            host[colon - text] = '\0';
            port_s = colon + 1;
        } else {
            port_s = text; // a port alone: loopback
        }
    }
    char *end = NULL;
    long port = strtol(port_s, &end, 10);
    if (!*port_s || *end || port < 0 || port > 65535) {
        snprintf(err, errlen, "'%s': the port must be a number in [0, 65535]", text);
        return -1;
    }
    if (!host[0] || !strcmp(host, "localhost")) snprintf(host, sizeof host, "127.0.0.1");
    struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *salen = sizeof *v4;
        *loopback = (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *salen = sizeof *v6;
        *loopback = IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr);
    } else {
        snprintf(err, errlen, "'%s': '%s' is not a numeric address; write 127.0.0.1:PORT (loopback), or the "
                 "numeric address to expose the endpoint on (e.g. 0.0.0.0:%ld)", text, host, port);
        return -1;
    }
    return 0;
}

static enum MHD_Result s_reply(struct MHD_Connection *c, unsigned int status, char *body, size_t len,
                               const char *type) {
    if (!body) return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, "Allow", "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result s_handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                const char *version, const char *upload_data, size_t *upload_data_size,
                                void **con_cls) {
    (void)version, (void)upload_data, (void)con_cls;
    http_metrics_t *h = cls;
    if (*upload_data_size) { // a body was sent: discard it (only GET is served)
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return s_reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, strdup("only GET\n"), 9, "text/plain; charset=utf-8");
    if (strcmp(url, "/metrics") != 0) {
        char *msg = strdup("not found: loco serves /metrics\n");
        return s_reply(c, MHD_HTTP_NOT_FOUND, msg, msg ? strlen(msg) : 0, "text/plain; charset=utf-8");
    }
    telemetry_refresh(h->prom);
    size_t len = 0;
    char *body = prom_render(h->prom, &len);
    return s_reply(c, MHD_HTTP_OK, body, len, "text/plain; version=0.0.4; charset=utf-8");
}

http_metrics_t *http_metrics_start(const char *listen_addr, prom_t *p, char *err, size_t errlen) {
    struct sockaddr_storage sa;
    socklen_t salen = 0;
    int loopback = 0;
    char why[300];
    if (http_metrics_parse_listen(listen_addr, &sa, &salen, &loopback, why, sizeof why) != 0) {
        snprintf(err, errlen, "[metrics] listen = %s: %s", listen_addr, why);
        return NULL;
    }
    // Bound here rather than by MHD, so a failure names its cause (address in use, ...).
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa, salen) != 0 || listen(fd, 16) != 0) {
        snprintf(err, errlen, "[metrics] listen = %s: cannot listen: %s", listen_addr, strerror(errno));
        if (fd >= 0) close(fd);
        return NULL;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    getsockname(fd, (struct sockaddr *)&bound, &bl);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (bound.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&bound)->sin6_addr, host, sizeof host);
        port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&bound)->sin_addr, host, sizeof host);
        port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    }
    http_metrics_t *h = calloc(1, sizeof *h);
    if (!h) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->prom = p;
    snprintf(h->url, sizeof h->url, bound.ss_family == AF_INET6 ? "http://[%s]:%d/metrics" : "http://%s:%d/metrics",
             host, port);
    unsigned int flags = MHD_USE_AUTO_INTERNAL_THREAD | (bound.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, s_handle, h, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned int)32, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned int)10, MHD_OPTION_END);
    if (!h->d) {
        close(fd);
        free(h);
        snprintf(err, errlen, "[metrics] listen = %s: the HTTP server (libmicrohttpd) did not start", listen_addr);
        return NULL;
    }
    if (loopback) log_info("metrics", "serving Prometheus metrics at %s", h->url);
    else log_warn("metrics", "serving Prometheus metrics at %s: a non-loopback address, reachable by anyone who can "
                  "reach this machine (no authentication)", h->url);
    return h;
}

const char *http_metrics_url(const http_metrics_t *h) { return h ? h->url : ""; }

void http_metrics_stop(http_metrics_t **self_p) {
    if (!self_p || !*self_p) return;
    http_metrics_t *h = *self_p;
    MHD_stop_daemon(h->d); // also closes the listening socket
    free(h);
    *self_p = NULL;
}
