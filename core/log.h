/* Leveled logging to stderr, as text or one JSON object per line. */
#ifndef ZCD_LOG_H
#define ZCD_LOG_H

typedef enum
{
  ZCD_LOG_DEBUG,
  ZCD_LOG_INFO,
  ZCD_LOG_WARN,
  ZCD_LOG_ERROR
} zcd_log_level_t;

/* Returns -1 for an unknown level or format name. */
int zcd_log_set_level (const char *name);
int zcd_log_set_format (const char *name); /* "text" or "json" */
void zcd_log_set_min (zcd_log_level_t level);
int zcd_log_enabled (zcd_log_level_t level);
void zcd_log (zcd_log_level_t level, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

#define log_debug(...) do { if (zcd_log_enabled (ZCD_LOG_DEBUG)) zcd_log (ZCD_LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) zcd_log (ZCD_LOG_INFO, __VA_ARGS__)
#define log_warn(...) zcd_log (ZCD_LOG_WARN, __VA_ARGS__)
#define log_error(...) zcd_log (ZCD_LOG_ERROR, __VA_ARGS__)

#endif
