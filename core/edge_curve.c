/* Who may connect and who they are: the ZAP (RFC 27) handler, run in the
 * daemon's own loop, for both kinds of command socket.
 *   ipc:   every connection is let in (the socket file's mode guards it);
 *          its User-Id is the peer's credentials (core/caller.h).
 *   tcp:   CURVE, with the allowed client keys; a key's User-Id is the
 *          `uid` (and `gid`) in its certificate's metadata, or "admin". */
#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/caller.h"
#include "core/edge_int.h"
#include "core/log.h"

#define ZAP_DOMAIN_LOCAL "local"

/* The verdict on one ZAP request: the status code and the User-Id. */
static const char *
s_verdict (edge_t *self, const char *domain, const char *address, const char *mechanism,
           zframe_t *key, char user_id[ZCD_USER_ID_MAX], const char **why)
{
  if (domain && strcmp (domain, ZAP_DOMAIN_LOCAL) == 0)
    {
      uint32_t uid, gid;
      if (mechanism == NULL || strcmp (mechanism, "NULL") != 0
          || !zcd_caller_from_ipc_address (address, &uid, &gid))
        {
          *why = "no peer credentials";
          return "400";
        }
      zcd_caller_user_id (uid, gid, user_id);
      return "200";
    }
  char z85[41] = "";
  const char *known = NULL;
  if (self->allowed_keys && mechanism && strcmp (mechanism, "CURVE") == 0 && key
      && zframe_size (key) == 32)
    {
      zmq_z85_encode (z85, zframe_data (key), 32);
      known = zhashx_lookup (self->allowed_keys, z85);
    }
  if (known == NULL)
    {
      *why = "client key not allowed";
      return "400";
    }
  snprintf (user_id, ZCD_USER_ID_MAX, "%s", known);
  return "200";
}

/* ZAP (RFC 27) handler in the loop: zauth would start a thread. */
static void
s_on_zap (loop_t *loop, void *zsock, void *arg)
{
  edge_t *self = arg;
  for (;;)
    {
      zmsg_t *request = zmsg_recv_nowait (zsock);
      if (request == NULL)
        return;
      char *version = zmsg_popstr (request);
      char *request_id = zmsg_popstr (request);
      char *domain = zmsg_popstr (request);
      char *address = zmsg_popstr (request);
      char *identity = zmsg_popstr (request);
      char *mechanism = zmsg_popstr (request);
      zframe_t *key = zmsg_pop (request);
      char user_id[ZCD_USER_ID_MAX] = "";
      const char *why = "OK";
      const char *status = s_verdict (self, domain, address, mechanism, key, user_id, &why);
      bool allowed = strcmp (status, "200") == 0;
      if (!allowed)
        log_warn ("client from %s refused: %s", address ? address : "?", why);
      zmsg_t *reply = zmsg_new ();
      zmsg_addstr (reply, "1.0");
      zmsg_addstr (reply, request_id ? request_id : "");
      zmsg_addstr (reply, status);
      zmsg_addstr (reply, why);
      zmsg_addstr (reply, allowed ? user_id : "");
      zmsg_addmem (reply, NULL, 0);
      zmsg_send (&reply, zsock);
      zframe_destroy (&key);
      free (version), free (request_id), free (domain), free (address), free (identity),
          free (mechanism);
      zmsg_destroy (&request);
    }
}

/* The User-Id of a client certificate: its `uid` metadata (with `gid`, or
 * the user's primary group, or the uid again), else "admin".  NULL when the
 * metadata is there but not a uid: such a key is refused, never taken for
 * an administrator. */
static char *
s_cert_user_id (zcert_t *cert)
{
  const char *uid_text = zcert_meta (cert, "uid");
  if (uid_text == NULL)
    return strdup ("admin");
  const char *gid_text = zcert_meta (cert, "gid");
  char probe[ZCD_USER_ID_MAX];
  zcd_caller_t caller;
  uint32_t gid = 0;
  snprintf (probe, sizeof probe, "u:%s:0", uid_text);
  if (!zcd_caller_parse (probe, &caller))
    return NULL;
  if (gid_text)
    {
      snprintf (probe, sizeof probe, "u:1:%s", gid_text);
      zcd_caller_t g;
      if (!zcd_caller_parse (probe, &g))
        return NULL;
      gid = g.gid;
    }
  else
    {
      struct passwd *pw = getpwuid (caller.uid);
      gid = pw ? pw->pw_gid : caller.uid;
    }
  char user_id[ZCD_USER_ID_MAX];
  zcd_caller_user_id (caller.uid, gid, user_id);
  return strdup (user_id);
}

static void
s_free_str (void **item)
{
  free (*item);
  *item = NULL;
}

/* The ZAP handler, and the local command socket's domain: set before it
 * binds, so that every ipc connection goes through the handler. */
int
edge_zap_setup (edge_t *self, void *zmq_ctx, zcd_error_t **err)
{
  self->zap = zmq_socket (zmq_ctx, ZMQ_REP);
  if (self->zap == NULL || zmq_bind (self->zap, "inproc://zeromq.zap.01") < 0)
    return zcd_fail (err, ZCD_E_INTERNAL, "ZAP: %s", zmq_strerror (zmq_errno ()));
  self->zap_watch = loop_add_zsock (self->loop, self->zap, s_on_zap, self);
  if (self->zap_watch == NULL)
    return zcd_fail_errno (err, errno, "watch the ZAP socket");
  /* libzmq lets a connection in without ZAP when no handler is bound
   * (ZMQ_ZAP_ENFORCE_DOMAIN, which would refuse it, is a draft option
   * Debian's libzmq lacks): the handler is bound here, before any socket
   * binds, and closed only after them (edge_destroy). */
  if (self->routers[SOCK_LOCAL])
    zmq_setsockopt (self->routers[SOCK_LOCAL], ZMQ_ZAP_DOMAIN, ZAP_DOMAIN_LOCAL,
                    strlen (ZAP_DOMAIN_LOCAL));
  return 0;
}

int
edge_curve_setup (edge_t *self, void *zmq_ctx, zcd_error_t **err)
{
  zcert_t *cert = zcert_load (self->cfg.curve_secret);
  if (cert == NULL)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "--curve-secret: cannot load `%s`",
                     self->cfg.curve_secret);
  self->allowed_keys = zhashx_new ();
  zhashx_set_destructor (self->allowed_keys, s_free_str);
  zdir_t *dir = zdir_new (self->cfg.curve_clients, "-");
  if (dir == NULL)
    {
      zcert_destroy (&cert);
      return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "--curve-clients: cannot read `%s`",
                       self->cfg.curve_clients);
    }
  zlist_t *files = zdir_list (dir);
  for (zfile_t *f = zlist_first (files); f; f = zlist_next (files))
    {
      zcert_t *client = zcert_load (zfile_filename (f, NULL));
      char *user_id = client ? s_cert_user_id (client) : NULL;
      if (client && user_id == NULL)
        log_warn ("--curve-clients: %s: `uid` or `gid` is not a number: key refused",
                  zfile_filename (f, NULL));
      if (user_id)
        zhashx_update (self->allowed_keys, zcert_public_txt (client), user_id);
      zcert_destroy (&client);
    }
  zlist_destroy (&files);
  zdir_destroy (&dir);
  int one = 1;
  /* The network sockets only: the local ones stay plain (defect 13). */
  void *socks[] = { self->routers[SOCK_NETWORK], self->pubs[SOCK_NETWORK] };
  for (int i = 0; i < 2; i++)
    {
      if (socks[i] == NULL)
        continue;
      zmq_setsockopt (socks[i], ZMQ_CURVE_SERVER, &one, sizeof one);
      zmq_setsockopt (socks[i], ZMQ_CURVE_SECRETKEY, zcert_secret_key (cert), 32);
    }
  zcert_destroy (&cert);
  return 0;
}
