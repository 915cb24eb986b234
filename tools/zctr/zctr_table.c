/* Tables for people: columns as wide as their widest cell, two spaces
 * apart, every column starting at the same offset on every row (issue 12).
 * Cells are sanitised here because their text comes from the daemon, and
 * through it from whoever created the container: an escape sequence in a
 * bundle path or an argument must not reach the operator's terminal. */
#include "tools/zctr/zctr.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZCTR_TABLE_MAX_COLUMNS 16
#define ZCTR_TABLE_GAP 2

struct zctr_table
{
  const char *headers[ZCTR_TABLE_MAX_COLUMNS];
  int flags[ZCTR_TABLE_MAX_COLUMNS];
  size_t n_columns;
  char **cells; /* row-major, n_columns per row */
  size_t n_cells, cap;
};

zctr_table_t *
zctr_table_new (void)
{
  zctr_table_t *t = calloc (1, sizeof *t);
  if (t == NULL)
    abort ();
  return t;
}

void
zctr_table_destroy (zctr_table_t **t_p)
{
  zctr_table_t *t = *t_p;
  if (t == NULL)
    return;
  for (size_t i = 0; i < t->n_cells; i++)
    free (t->cells[i]);
  free (t->cells);
  free (t);
  *t_p = NULL;
}

void
zctr_table_column (zctr_table_t *t, const char *header, int flags)
{
  if (t->n_columns >= ZCTR_TABLE_MAX_COLUMNS || t->n_cells > 0)
    abort (); /* a programming error: columns come first */
  t->headers[t->n_columns] = header;
  t->flags[t->n_columns] = flags;
  t->n_columns++;
}

/* Control characters (C0, DEL, and C1 as UTF-8) become '?'. */
static void
s_sanitise (char *s)
{
  unsigned char *p = (unsigned char *)s;
  for (size_t i = 0; p[i]; i++)
    {
      if (p[i] < 0x20 || p[i] == 0x7f)
        p[i] = '?';
      else if (p[i] == 0xc2 && p[i + 1] >= 0x80 && p[i + 1] < 0xa0)
        p[i] = p[i + 1] = '?';
    }
}

void
zctr_put_safe (FILE *out, const char *s)
{
  char *copy = strdup (s);
  if (copy == NULL)
    abort ();
  s_sanitise (copy);
  fputs (copy, out);
  free (copy);
}

void
zctr_table_cell (zctr_table_t *t, const char *fmt, ...)
{
  if (t->n_cells == t->cap)
    {
      size_t cap = t->cap ? t->cap * 2 : 64;
      char **grown = realloc (t->cells, cap * sizeof *grown);
      if (grown == NULL)
        abort ();
      t->cells = grown;
      t->cap = cap;
    }
  va_list ap;
  va_start (ap, fmt);
  char *text = NULL;
  if (vasprintf (&text, fmt, ap) < 0)
    abort ();
  va_end (ap);
  s_sanitise (text);
  t->cells[t->n_cells++] = text;
}

size_t
zctr_table_rows (const zctr_table_t *t)
{
  return t->n_columns ? t->n_cells / t->n_columns : 0;
}

static const char *
s_cell (const zctr_table_t *t, size_t row, size_t column)
{
  size_t i = row * t->n_columns + column;
  return column < t->n_columns && i < t->n_cells ? t->cells[i] : "";
}

/* Columns on screen: UTF-8 continuation bytes take none (wide characters
 * are counted as one: ids, the text that matters, are ASCII). */
size_t
zctr_text_width (const char *s)
{
  size_t w = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if ((*p & 0xc0) != 0x80)
      w++;
  return w;
}

/* Bytes of s that fill at most width columns. */
static size_t
s_prefix_bytes (const char *s, size_t width)
{
  size_t w = 0, i = 0;
  for (; s[i]; i++)
    if (((unsigned char)s[i] & 0xc0) != 0x80 && w++ == width)
      break;
  return i;
}

/* Widths from content; past max_width the ZCTR_COL_SHRINK column gives up
 * what it must, down to its header's width. */
static void
s_widths (const zctr_table_t *t, const zctr_table_style_t *style, size_t *w)
{
  size_t total = style ? style->indent : 0;
  for (size_t c = 0; c < t->n_columns; c++)
    {
      w[c] = zctr_text_width (t->headers[c]);
      for (size_t r = 0; r < zctr_table_rows (t); r++)
        {
          size_t cw = zctr_text_width (s_cell (t, r, c));
          w[c] = cw > w[c] ? cw : w[c];
        }
      total += w[c] + (c ? ZCTR_TABLE_GAP : 0);
    }
  if (style == NULL || style->max_width == 0 || total <= style->max_width)
    return;
  for (size_t c = 0; c < t->n_columns; c++)
    if (t->flags[c] & ZCTR_COL_SHRINK)
      {
        size_t floor = zctr_text_width (t->headers[c]);
        floor = floor < 4 ? 4 : floor;
        size_t excess = total - style->max_width;
        w[c] = w[c] > floor + excess ? w[c] - excess : (w[c] < floor ? w[c] : floor);
        return;
      }
}

/* One line into line (at most cap bytes): a cell wider than its column is
 * cut and ends in '+', as top marks a truncated field ('+' is no id
 * character). */
static void
s_format_line (const zctr_table_t *t, const char *const *cells, const size_t *w, size_t indent,
               char *line, size_t cap)
{
  size_t used = (size_t)snprintf (line, cap, "%*s", (int)indent, "");
  for (size_t c = 0; c < t->n_columns && used < cap; c++)
    {
      const char *s = cells[c];
      size_t sw = zctr_text_width (s);
      bool last = c + 1 == t->n_columns;
      if (c)
        used += (size_t)snprintf (line + used, cap - used, "%*s", ZCTR_TABLE_GAP, "");
      if (used >= cap)
        break;
      if (sw > w[c])
        {
          int n = (int)s_prefix_bytes (s, w[c] ? w[c] - 1 : 0);
          used += (size_t)snprintf (line + used, cap - used, "%.*s+", n, s);
        }
      else
        used += (size_t)snprintf (line + used, cap - used, "%s%*s", s, last ? 0 : (int)(w[c] - sw),
                                  "");
    }
}

void
zctr_table_print (const zctr_table_t *t, FILE *out, const zctr_table_style_t *style)
{
  size_t w[ZCTR_TABLE_MAX_COLUMNS];
  s_widths (t, style, w);
  size_t indent = style ? style->indent : 0;
  size_t cap = indent + 1;
  for (size_t c = 0; c < t->n_columns; c++)
    cap += w[c] + ZCTR_TABLE_GAP + 2;
  char *line = malloc (cap);
  if (line == NULL)
    abort ();
  const char *eol = style && style->eol ? style->eol : "\n";
  size_t rows = zctr_table_rows (t);
  for (size_t r = style && style->no_header ? 1 : 0; r <= rows; r++)
    {
      const char *const *cells
          = r == 0 ? t->headers : (const char *const *)t->cells + (r - 1) * t->n_columns;
      s_format_line (t, cells, w, indent, line, cap);
      /* the last resort on a narrow terminal: cut the line itself */
      if (style && style->max_width)
        line[s_prefix_bytes (line, style->max_width)] = '\0';
      fprintf (out, "%s%s", line, eol);
    }
  free (line);
}
