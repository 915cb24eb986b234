/* CURVE for the tcp:// sockets: the allowed client keys and the ZAP
 * (RFC 27) handler that checks them, run in the daemon's own loop. */
#include <stdbool.h>
#include <string.h>

#include "core/edge_int.h"
#include "core/log.h"

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
      bool allowed = false;
      char z85[41] = "";
      if (mechanism && strcmp (mechanism, "CURVE") == 0 && key && zframe_size (key) == 32)
        {
          zmq_z85_encode (z85, zframe_data (key), 32);
          allowed = zhashx_lookup (self->allowed_keys, z85) != NULL;
        }
      if (!allowed)
        log_warn ("CURVE client from %s refused", address ? address : "?");
      zmsg_t *reply = zmsg_new ();
      zmsg_addstr (reply, "1.0");
      zmsg_addstr (reply, request_id ? request_id : "");
      zmsg_addstr (reply, allowed ? "200" : "400");
      zmsg_addstr (reply, allowed ? "OK" : "client key not allowed");
      zmsg_addstr (reply, allowed ? z85 : "");
      zmsg_addmem (reply, NULL, 0);
      zmsg_send (&reply, zsock);
      zframe_destroy (&key);
      free (version), free (request_id), free (domain), free (address), free (identity),
          free (mechanism);
      zmsg_destroy (&request);
    }
}

int
edge_curve_setup (edge_t *self, void *zmq_ctx, zcd_error_t **err)
{
  zcert_t *cert = zcert_load (self->cfg.curve_secret);
  if (cert == NULL)
    return zcd_fail (err, ZCD_E_INVALID_ARGUMENT, "--curve-secret: cannot load `%s`",
                     self->cfg.curve_secret);
  self->allowed_keys = zhashx_new ();
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
      if (client)
        zhashx_insert (self->allowed_keys, zcert_public_txt (client), (void *) 1);
      zcert_destroy (&client);
    }
  zlist_destroy (&files);
  zdir_destroy (&dir);
  self->zap = zmq_socket (zmq_ctx, ZMQ_REP);
  int one = 1;
  if (zmq_bind (self->zap, "inproc://zeromq.zap.01") < 0)
    {
      zcert_destroy (&cert);
      return zcd_fail (err, ZCD_E_INTERNAL, "ZAP: %s", zmq_strerror (zmq_errno ()));
    }
  self->zap_watch = loop_add_zsock (self->loop, self->zap, s_on_zap, self);
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
