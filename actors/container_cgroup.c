/* A container's cgroup, found from its init's pid once it started: where
 * its pids are listed (`pids` in `state`), what the stats actor reads
 * (told once here), and the OOM watch that publishes the `oom` event
 * (once) before the init's exit. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "actors/container.h"
#include "core/amsg_gen.h"
#include "core/cgroup.h"
#include "core/cleanup.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/mp.h"

void
container_note_oom (container_t *self)
{
  if (self->oom_seen)
    return;
  self->oom_seen = true;
  container_emit (self, NULL, &(amsg_event_t){ .etype = "oom" });
}

static void
s_on_oom (loop_t *loop, int fd, uint32_t revents, void *arg)
{
  container_t *self = arg;
  bool oom = false;
  cleanup_error zcd_error_t *err = NULL;
  if (cgroup_oom_watch_read (self->cgroup, fd, &oom, &err) < 0)
    log_warn ("container %s: oom watch: %s", self->id, err->msg);
  if (oom)
    container_note_oom (self);
  /* A v1 eventfd also fires once when the cgroup goes away: after the
   * removal nothing more can come, so stop watching. */
  if (revents & (EPOLLHUP | EPOLLERR)
      || (!oom && access (self->cgroup_procs ? self->cgroup_procs : "/", F_OK) < 0))
    {
      loop_remove (loop, self->oom_watch);
      self->oom_watch = NULL;
    }
}

/* The oom event must precede the init's exit (PROTOCOL.md section 5): the
 * kernel signals the OOM before the killed process is even reaped, so a
 * watch set up at start sees it first. */
static void
s_watch_oom (container_t *self)
{
  cleanup_error zcd_error_t *err = NULL;
  if (cgroup_oom_watch_open (self->cgroup, &self->oom_fd, &err) < 0)
    {
      log_warn ("container %s: no OOM notifications: %s", self->id, err->msg);
      self->oom_fd = -1;
      return;
    }
  self->oom_watch = loop_add_fd (self->daemon->loop, self->oom_fd, EPOLLIN, s_on_oom, self);
}

/* Stats reads the container's cgroups from what it is told here, the one
 * place they were found (from the init's pid, once). */
static void
s_send_cgroup (container_t *self)
{
  char **controllers = cgroup_paths_controller_dirs (self->cgroup);
  amsg_cgroup_t m = {
    .id = self->id,
    .version = (uint32_t)cgroup_paths_version (self->cgroup),
    .unified = cgroup_paths_unified (self->cgroup),
    .controllers = (const char *const *)controllers,
  };
  amsg_cgroup_send (self->daemon->actors, actor_name (self->actor), STATS_ACTOR, &m, NULL);
  mp_strv_free (controllers);
}

void
container_forget_cgroup (container_t *self)
{
  if (self->cgroup == NULL)
    return;
  amsg_uncgroup_send (self->daemon->actors, actor_name (self->actor), STATS_ACTOR,
                      &(amsg_uncgroup_t){ .id = self->id }, NULL);
}

void
container_attach_cgroup (container_t *self, pid_t init_pid)
{
  cleanup_error zcd_error_t *err = NULL;
  /* A rootless container's pid is its user's word, and its runtime made
   * no cgroup of its own (cgroup v1 delegates none to a user): the cgroup
   * it is in is the daemon's, which is no one's to see through `state`
   * or `stats`. */
  if (self->owner.uid != 0)
    return;
  if (cgroup_paths_for_pid (CGROUP_ROOT_DEFAULT, init_pid, &self->cgroup, &err) < 0)
    {
      log_warn ("container %s: cgroups: %s", self->id, err->msg);
      return;
    }
  const char *dir = cgroup_paths_version (self->cgroup) == CGROUP_V2
                        ? cgroup_paths_dir (self->cgroup, NULL)
                        : cgroup_paths_dir (self->cgroup, "pids");
  if (dir == NULL)
    dir = cgroup_paths_dir (self->cgroup, "memory");
  if (zcd_cgroup_dir_is_root (dir)
      || zcd_cgroup_dir_is_root (cgroup_paths_dir (self->cgroup, "memory")))
    {
      /* The init is already gone: nothing of the container to watch. */
      cgroup_paths_destroy (&self->cgroup);
      return;
    }
  if (dir && asprintf (&self->cgroup_procs, "%s/cgroup.procs", dir) < 0)
    self->cgroup_procs = NULL;
  s_send_cgroup (self);
  s_watch_oom (self);
}
