// Logging to stderr: time, level, module, message. The level is checked before anything is
// formatted, so a disabled debug line costs one comparison.
#ifndef LOCO_LOG_H
#define LOCO_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level_t;

extern log_level_t log_min_level;

// Sets the minimum level from a name (debug|info|warn|error). Returns 0, or -1 for an unknown name.
int log_set_level(const char *name);

// Writes one line "2026-11-27T00:52:40.123Z INFO  module: message". Thread-safe (one write()).
void log_write(log_level_t level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LOG(level, module, ...) \
    do { if ((level) >= log_min_level) log_write((level), (module), __VA_ARGS__); } while (0)
#define log_debug(module, ...) LOG(LOG_DEBUG, module, __VA_ARGS__)
#define log_info(module, ...)  LOG(LOG_INFO, module, __VA_ARGS__)
#define log_warn(module, ...)  LOG(LOG_WARN, module, __VA_ARGS__)
#define log_error(module, ...) LOG(LOG_ERROR, module, __VA_ARGS__)

#endif
