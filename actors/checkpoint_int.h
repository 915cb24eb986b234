/* Between the checkpoint actor (checkpoint.c) and the restore side of
 * checkpoints (checkpoint_restore.c). */
#ifndef ZCD_CHECKPOINT_INT_H
#define ZCD_CHECKPOINT_INT_H

#include <jansson.h>

#include "actors/actors.h"

/* src from a checkpoint's (valid) marker. */
void checkpoint_source_fill (checkpoint_source_t *src, json_t *meta);

#endif
