/* The fan-out client's nodes: CURVE keys, czmq certificate files and the
 * node file (docs/fanout.md). */
#include "lib/zcd_fanout_int.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* ---- keys and certificates ---------------------------------------------- */

static bool
s_valid_key (const char *z85)
{
  uint8_t raw[32];
  return z85 && strlen (z85) == FO_KEY_LEN && zmq_z85_decode (raw, z85) != NULL;
}

/* The value of `key = "value"` on a certificate line, copied to out
 * (FO_KEY_LEN + 1 bytes); false when the line is not that key. */
static bool
s_cert_value (const char *line, const char *key, char *out)
{
  while (isspace ((unsigned char)*line))
    line++;
  size_t klen = strlen (key);
  if (strncmp (line, key, klen) != 0)
    return false;
  line += klen;
  while (isspace ((unsigned char)*line))
    line++;
  if (*line++ != '=')
    return false;
  while (isspace ((unsigned char)*line))
    line++;
  char quote = (*line == '"' || *line == '\'') ? *line++ : '\0';
  size_t n = 0;
  while (line[n] && n <= FO_KEY_LEN
         && (quote ? line[n] != quote : !isspace ((unsigned char)line[n])))
    n++;
  if (n != FO_KEY_LEN)
    return false;
  memcpy (out, line, FO_KEY_LEN);
  out[FO_KEY_LEN] = '\0';
  return true;
}

/* The public and (when present) secret key of a czmq certificate file
 * (ZPL: a `curve` section with public-key and secret-key).  secret may be
 * NULL.  0, or -1 with the reason in self's last error. */
static int
s_read_cert (zcd_fanout_t *self, const char *path, char *public, char *secret)
{
  FILE *f = fopen (path, "r");
  if (f == NULL)
    {
      int saved = errno;
      fo_set_error (self, "certificate %s: %s", path, strerror (saved));
      errno = saved;
      return -1;
    }
  char *line = NULL;
  size_t cap = 0;
  public[0] = '\0';
  if (secret)
    secret[0] = '\0';
  while (getline (&line, &cap, f) > 0)
    {
      char value[FO_KEY_LEN + 1];
      if (s_cert_value (line, "public-key", value))
        memcpy (public, value, sizeof value);
      else if (secret && s_cert_value (line, "secret-key", value))
        memcpy (secret, value, sizeof value);
    }
  free (line);
  fclose (f);
  /* a certificate with the secret key only: its public key follows */
  if (secret && s_valid_key (secret) && !public[0] && zmq_curve_public (public, secret) != 0)
  public[0] = '\0';
  if (!s_valid_key (public) || (secret && !s_valid_key (secret)))
    {
      fo_set_error (self, "certificate %s: no valid %s in Z85", path,
                    secret && !s_valid_key (secret) ? "secret-key" : "public-key");
      errno = EINVAL;
      return -1;
    }
  return 0;
}

int
zcd_fanout_set_client_keys (zcd_fanout_t *self, const char *public_z85, const char *secret_z85)
{
  char derived[FO_KEY_LEN + 1];
  if (public_z85 == NULL && s_valid_key (secret_z85) && zmq_curve_public (derived, secret_z85) == 0)
    public_z85 = derived;
  if (!s_valid_key (public_z85) || !s_valid_key (secret_z85))
    {
      fo_set_error (self, "client keys: not two CURVE keys in Z85 (40 characters each)");
      errno = EINVAL;
      return -1;
    }
  memcpy (self->client_public, public_z85, FO_KEY_LEN + 1);
  memcpy (self->client_secret, secret_z85, FO_KEY_LEN + 1);
  return 0;
}

int
zcd_fanout_set_client_cert (zcd_fanout_t *self, const char *cert_path)
{
  char public[FO_KEY_LEN + 1], secret[FO_KEY_LEN + 1];
  if (s_read_cert (self, cert_path, public, secret) < 0)
    return -1;
  return zcd_fanout_set_client_keys (self, public, secret);
}

/* ---- nodes and the node file -------------------------------------------- */

static bool
s_valid_name (const char *name)
{
  size_t n = strlen (name);
  if (n == 0 || n > 64 || !isalnum ((unsigned char)name[0]))
    return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum ((unsigned char)name[i]) && !strchr ("_.-", name[i]))
      return false;
  return true;
}

int
zcd_fanout_add_node (zcd_fanout_t *self, const char *name, const char *cmd_ep, const char *evt_ep,
                     const char *server_key)
{
  const char *why = !name || !s_valid_name (name)                ? "a name of 1-64 [A-Za-z0-9_.-]"
                    : zcd_fanout_node_index (self, name) >= 0    ? "a name not used yet"
                    : !cmd_ep || !*cmd_ep || !evt_ep || !*evt_ep ? "two endpoints"
                    : server_key && !s_valid_key (server_key) ? "a server key of 40 Z85 characters"
                                                              : NULL;
  if (why)
    {
      fo_set_error (self, "node %s: needs %s", name ? name : "(null)", why);
      errno = EINVAL;
      return -1;
    }
  if (self->n_nodes == self->cap_nodes)
    {
      size_t cap = self->cap_nodes ? self->cap_nodes * 2 : 4;
      fo_node_t *grown = realloc (self->nodes, cap * sizeof *grown);
      if (grown == NULL)
        return -1;
      self->nodes = grown;
      self->cap_nodes = cap;
    }
  fo_node_t *node = &self->nodes[self->n_nodes];
  memset (node, 0, sizeof *node);
  node->name = strdup (name);
  node->cmd_ep = strdup (cmd_ep);
  node->evt_ep = strdup (evt_ep);
  if (!node->name || !node->cmd_ep || !node->evt_ep)
    {
      free (node->name);
      free (node->cmd_ep);
      free (node->evt_ep);
      errno = ENOMEM;
      return -1;
    }
  if (server_key)
    memcpy (node->server_key, server_key, FO_KEY_LEN + 1);
  node->next_rid = 1;
  node->evt_next_rid = 1;
  node->stream.since = self->since;
  self->n_nodes++;
  return 0;
}

/* path as written in the node file: relative ones are relative to the
 * file's own directory, so a node file and its certificates move together.
 * malloc'd. */
static char *
s_beside (const char *file, const char *path)
{
  if (path[0] == '/')
    return strdup (path);
  char *copy = strdup (file);
  char *joined = NULL;
  if (copy && asprintf (&joined, "%s/%s", dirname (copy), path) < 0)
    joined = NULL;
  free (copy);
  return joined;
}

/* One non-comment line of a node file, split into fields. */
static int
s_load_line (zcd_fanout_t *self, const char *path, char **f, int nf)
{
  if (nf == 2 && strcmp (f[0], "client-cert") == 0)
    {
      char *cert = s_beside (path, f[1]);
      int rc = cert ? zcd_fanout_set_client_cert (self, cert) : -1;
      free (cert);
      return rc;
    }
  if (nf != 4)
    {
      fo_set_error (self, "expected `NAME COMMAND-EP EVENTS-EP SERVER-KEY` or `client-cert PATH`");
      errno = EINVAL;
      return -1;
    }
  if (strcmp (f[3], "-") == 0)
    return zcd_fanout_add_node (self, f[0], f[1], f[2], NULL);
  if (s_valid_key (f[3]))
    return zcd_fanout_add_node (self, f[0], f[1], f[2], f[3]);
  /* not a key: the path of the daemon's public certificate */
  char key[FO_KEY_LEN + 1];
  char *cert = s_beside (path, f[3]);
  int rc = cert ? s_read_cert (self, cert, key, NULL) : -1;
  free (cert);
  return rc < 0 ? -1 : zcd_fanout_add_node (self, f[0], f[1], f[2], key);
}

int
zcd_fanout_load (zcd_fanout_t *self, const char *path)
{
  FILE *f = fopen (path, "r");
  if (f == NULL)
    {
      int saved = errno;
      fo_set_error (self, "%s: %s", path, strerror (saved));
      errno = saved;
      return -1;
    }
  char *line = NULL;
  size_t cap = 0;
  int rc = 0, lineno = 0;
  while (rc == 0 && getline (&line, &cap, f) >= 0)
    {
      lineno++;
      char *fields[5];
      int nf = 0;
      char *save = NULL;
      for (char *tok = strtok_r (line, " \t\r\n", &save); tok && nf < 5;
           tok = strtok_r (NULL, " \t\r\n", &save))
        fields[nf++] = tok;
      /* comments are whole lines: Z85 keys may hold a '#' */
      if (nf == 0 || fields[0][0] == '#')
        continue;
      if ((rc = s_load_line (self, path, fields, nf)) < 0)
        {
          int saved = errno;
          fo_set_error (self, "%s:%d: %s", path, lineno, zcd_fanout_last_error (self));
          errno = saved;
        }
    }
  free (line);
  fclose (f);
  if (rc == 0 && self->n_nodes == 0)
    {
      fo_set_error (self, "%s: no nodes", path);
      errno = EINVAL;
      rc = -1;
    }
  return rc;
}
