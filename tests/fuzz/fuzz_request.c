/* libFuzzer target for the protocol edge: any body must decode to a
 * request or an error, never crash or leak, and every reply packed from
 * it must itself be one well-formed msgpack object. */
#include <stdint.h>
#include <stdlib.h>

#include "core/mp.h"
#include "core/proto.h"

/* Reads every key of a valid request the way handlers will. */
static void
s_read_like_a_handler (const proto_request_t *req)
{
  for (size_t i = 0; i < req->op->n_keys; i++)
    {
      const proto_key_t *key = &req->op->keys[i];
      free (mp_get_strdup (req->body, key->name));
      mp_strv_free (mp_get_strv (req->body, key->name));
      (void) mp_get_uint (req->body, key->name, 0);
      (void) mp_get_bool (req->body, key->name, false);
    }
}

static void
s_assert_well_formed (const msgpack_sbuffer *out)
{
  if (mp_check (out->data, out->size, MP_MAX_DEPTH) != 0)
    abort ();
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  proto_request_t req;
  proto_request_init (&req);
  zcd_error_t *err = NULL;
  msgpack_sbuffer out;
  msgpack_sbuffer_init (&out);
  if (proto_decode_request ((const char *) data, size, 64 * 1024, &req, &err) < 0)
    {
      if (err == NULL || req.op != NULL)
        abort ();
      proto_pack_error (&out, req.rid, err);
      zcd_error_free (&err);
    }
  else
    {
      s_read_like_a_handler (&req);
      proto_pack_ok_reply (&out, req.rid, req.body);
    }
  s_assert_well_formed (&out);
  msgpack_sbuffer_destroy (&out);
  proto_request_fini (&req);
  return 0;
}
